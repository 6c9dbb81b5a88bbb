"""From a query to ranked chunks: search modes, hybrid fusion, MMR, reranking and relevance scores."""
