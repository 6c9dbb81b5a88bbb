#!/usr/bin/env bash
# The main job: ingest the bilingual sample documents into an embedded Chroma index and answer queries.
# Uses $M3E_MODEL when set (a real M3E folder or hub id); on a machine without the weights it builds
# the offline bilingual stand-in model first and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/quickstart.py "$@"
