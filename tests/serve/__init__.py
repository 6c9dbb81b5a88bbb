"""Tests of m3e_rag.serve: the HTTP service, in-process and as a live server."""
