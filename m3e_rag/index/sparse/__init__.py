"""The sparse side of an index: Chinese-aware BM25 postings, their folder on disk, and their sync with Chroma."""
