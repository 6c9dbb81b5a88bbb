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
.venv/bin/python -m pytest "$@"
