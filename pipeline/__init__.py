"""contractsum: batch summarization of legal contracts with grounded citations."""

__version__ = "0.1.0"
