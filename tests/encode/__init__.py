"""Tests of m3e_rag.encode: the encoder, its backends, loaders and the model registry."""
