"""The front doors: small pinned public APIs, namespace packages, a wheel that installs the adapters."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: sha256 of the Apache License 2.0 text (apache.org/licenses/LICENSE-2.0.txt) with whitespace runs made one space.
APACHE_2_SHA256 = "0ffddef9e48f8a09aed5caf2d44f7ba1c1be2d9b8e0a6f693b1635b2d5566645"


def test_license_is_the_apache_2_text_the_metadata_names() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert hashlib.sha256(" ".join(text.split()).encode()).hexdigest() == APACHE_2_SHA256, "LICENSE is not Apache-2.0"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is 3.11+; this runs on 3.10
    assert re.findall(r'^license = "([^"]*)"', pyproject, re.M) == ["Apache-2.0"]


def test_notice_says_the_weights_are_not_ours() -> None:
    """The note beside LICENSE: no weights ship; M3E's are MokaAI's, under their own terms."""
    notice = " ".join((ROOT / "NOTICE").read_text(encoding="utf-8").split())
    assert "ship no model weights" in notice and "MokaAI" in notice and "own terms" in notice
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    licence = readme[readme.index("\n## Licence\n"):].split("\n## ", 2)[1]
    assert "LICENSE" in licence and "NOTICE" in licence and "MokaAI" in licence


def test_public_api_is_small_and_pinned() -> None:
    from llama_index.embeddings import m3e as li_emb
    from llama_index.node_parser import m3e as li_np
    from llama_index.postprocessor import m3e as li_post
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
    assert sorted(langchain_m3e.__all__) == ["M3EContextRetriever", "M3EEmbeddings", "M3ERetriever", "M3ETextSplitter",
                                             "M3EVectorStore"]
    assert li_emb.__all__ == ["M3EEmbedding"] and li_ret.__all__ == ["M3ERetriever"]
    assert li_vs.__all__ == ["M3EVectorStore"] and li_np.__all__ == ["M3ENodeParser"]
    assert li_read.__all__ == ["M3EReader"] and li_post.__all__ == ["M3EContextPostprocessor"]


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
                                                 "readers", "postprocessor"))):
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
                     "llama_index/node_parser/m3e/__init__.py", "llama_index/readers/m3e/__init__.py",
                     "llama_index/postprocessor/m3e/__init__.py"):
        assert required in names
    assert "llama_index/__init__.py" not in names and "llama_index/embeddings/__init__.py" not in names
    for level in ("retrievers", "vector_stores", "node_parser", "readers", "postprocessor"):
        assert f"llama_index/{level}/__init__.py" not in names
    assert not any(n.startswith(("tests/", "integrations/", "examples/")) for n in names)
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/NOTICE"} <= names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "m3e-rag = m3e_rag.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
