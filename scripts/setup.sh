#!/usr/bin/env bash
# Create .venv and install m3e-rag with every extra and the test tools.
# torch==2.13.0 goes first: that CPU wheel is what this machine has; a bare `torch`
# requirement resolved first would pull a multi-GB CUDA build. Idempotent: skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.m3e-rag-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[all,test]"
  rm -f .venv/.m3e-rag-installed-*
  touch "$stamp"
fi
