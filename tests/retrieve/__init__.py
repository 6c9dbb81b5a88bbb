"""Tests of m3e_rag.retrieve and the pipeline facade: search modes, filters, fusion, reranking."""
