"""Tests of m3e_rag.evaluate: retrieval evaluation, sentence pairs, model comparison."""
