"""Tests of m3e_rag.index: the Chroma store, the BM25 side, integrity, durability and the doctor."""
