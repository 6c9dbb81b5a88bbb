"""Where chunks live: the guarded Chroma collection, the BM25 side, integrity checks and the doctor."""
