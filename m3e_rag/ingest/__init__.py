"""From files and framework documents to stored chunks: loaders, the Chinese-aware chunker, the ingest run."""
