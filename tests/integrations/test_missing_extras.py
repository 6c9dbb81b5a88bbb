"""Each framework adapter, imported without its framework, says which extra to install."""

from __future__ import annotations

import subprocess
import sys

ADAPTERS = {
    "langchain_m3e": ("langchain_core", "langchain"),
    "llama_index.embeddings.m3e": ("llama_index.core", "llamaindex"),
    "llama_index.retrievers.m3e": ("llama_index.core", "llamaindex"),
    "llama_index.vector_stores.m3e": ("llama_index.core", "llamaindex"),
    "llama_index.node_parser.m3e": ("llama_index.core", "llamaindex"),
    "llama_index.readers.m3e": ("llama_index.core", "llamaindex"),
}

PROBE = """
import importlib, sys
from m3e_rag.errors import MissingExtraError
for adapter, framework in {pairs!r}:
    sys.modules[framework] = None  # as if the framework were not installed
    try:
        importlib.import_module(adapter)
    except MissingExtraError as exc:
        print(adapter, "|", exc)
    else:
        print(adapter, "| imported")
    sys.modules.pop(framework)
"""


def test_a_missing_framework_names_the_extra() -> None:
    pairs = [(adapter, framework) for adapter, (framework, _) in ADAPTERS.items()]
    proc = subprocess.run([sys.executable, "-c", PROBE.format(pairs=pairs)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(" | ", 1) for line in proc.stdout.splitlines())
    assert set(lines) == set(ADAPTERS)
    for adapter, (_, extra) in ADAPTERS.items():
        assert lines[adapter].startswith(f"{adapter} needs the "), lines[adapter]
        assert f"pip install 'm3e-rag[{extra}]'" in lines[adapter]
