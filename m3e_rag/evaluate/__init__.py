"""Retrieval scored on labelled sets, sentence-pair evaluation, and model comparison."""
