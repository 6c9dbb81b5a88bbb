"""Tests of the m3e-rag command line."""
