#!/usr/bin/env bash
# The project's whole check: install (if needed), lint, type-check, run every test (slow ones too).
# Tests that need a Chroma server start their own `chroma run` on 127.0.0.1 (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check m3e_rag integrations tests examples benchmarks scripts
.venv/bin/mypy
# The layering of docs/architecture.md: each layer imports only those below it, no circles (pyproject.toml).
PYTHONPATH=.:integrations .venv/bin/lint-imports
# Two worker processes (pytest-xdist): many tests wait on subprocesses, servers and disk, so two workers on 2
# cores took 13:07 against 19:52 in one process (one clean clone, the same hour, the same 2-core machine).
# Each worker starts its own Chroma server; M3E_RAG_TEST_WORKERS=0 runs in one process, and a later -n in "$@"
# wins. --dist loadfile keeps each test file on one worker: some files' tests share one browser or server in
# order (test_ui_browser.py opens the page once, then each test works on it), which a split would break.
.venv/bin/python -m pytest -n "${M3E_RAG_TEST_WORKERS:-2}" --dist loadfile "$@"
