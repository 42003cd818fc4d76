"""Review: prompt templates, the output schema, map/reduce summarize."""
