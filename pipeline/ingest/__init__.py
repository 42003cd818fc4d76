"""Ingest: files → pages → sentences, extraction processes, chunking."""
