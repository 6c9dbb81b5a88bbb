"""Tests of m3e_rag.ingest: loaders, the chunker and ingest hardening."""
