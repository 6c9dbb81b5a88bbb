"""Tests of the project as shipped: README blocks, examples, packaging, benchmarks, stand-ins."""
