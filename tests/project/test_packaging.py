"""The front doors: small pinned public APIs, namespace packages, a wheel that installs the adapters."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_public_api_is_small_and_pinned() -> None:
    from llama_index.embeddings import m3e as li_emb
    from llama_index.node_parser import m3e as li_np
    from llama_index.readers import m3e as li_read
    from llama_index.retrievers import m3e as li_ret
    from llama_index.vector_stores import m3e as li_vs

    import langchain_m3e
    import m3e_rag

    assert sorted(m3e_rag.__all__) == sorted([
        "M3EEncoder", "RAGPipeline", "IngestReport", "Document", "Chunk", "RetrievedChunk", "ModelSpec", "MODELS",
        "M3ERagError", "InputError", "ModelLoadError", "ModelMismatchError", "StoreError",
    ])
    assert all(getattr(m3e_rag, name) is not None for name in m3e_rag.__all__)
    assert sorted(langchain_m3e.__all__) == ["M3EEmbeddings", "M3ERetriever", "M3ETextSplitter", "M3EVectorStore"]
    assert li_emb.__all__ == ["M3EEmbedding"] and li_ret.__all__ == ["M3ERetriever"]
    assert li_vs.__all__ == ["M3EVectorStore"] and li_np.__all__ == ["M3ENodeParser"]
    assert li_read.__all__ == ["M3EReader"]


def test_import_is_light_and_offline() -> None:
    """Importing the engine loads no model, no torch, no Chroma and no framework."""
    code = (
        "import sys, m3e_rag, m3e_rag.cli.dispatch;"
        "heavy = [m for m in ('torch', 'chromadb', 'langchain_core', 'llama_index.core', 'sentence_transformers')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_llama_index_levels_are_namespace_packages() -> None:
    base = ROOT / "integrations" / "llama_index"
    for level in (base, *(base / sub for sub in ("embeddings", "retrievers", "vector_stores", "node_parser",
                                                 "readers"))):
        assert not (level / "__init__.py").exists(), f"{level} must stay a namespace package"
    import llama_index.core
    import llama_index.embeddings.m3e

    assert Path(llama_index.core.__file__).parent.name == "core"


@pytest.mark.slow
def test_wheel_contains_the_adapters_under_their_ecosystem_names(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("m3e_rag-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("m3e_rag/__init__.py", "m3e_rag/py.typed", "langchain_m3e/__init__.py",
                     "llama_index/embeddings/m3e/__init__.py", "llama_index/retrievers/m3e/__init__.py",
                     "llama_index/vector_stores/m3e/__init__.py", "llama_index/vector_stores/m3e/py.typed",
                     "llama_index/node_parser/m3e/__init__.py", "llama_index/readers/m3e/__init__.py"):
        assert required in names
    assert "llama_index/__init__.py" not in names and "llama_index/embeddings/__init__.py" not in names
    for level in ("retrievers", "vector_stores", "node_parser", "readers"):
        assert f"llama_index/{level}/__init__.py" not in names
    assert not any(n.startswith(("tests/", "integrations/", "examples/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "m3e-rag = m3e_rag.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
