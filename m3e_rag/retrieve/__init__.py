"""From a query to ranked chunks: the searcher, search modes, hybrid fusion, MMR, reranking and relevance scores."""
