"""Write ``tests/data/index-0.1.0/``: an index folder made by m3e-rag 0.1.0 before the package moved (issue 19).

Run once, from the repository root, on the code of commit e7d6006 (the last flat layout)::

    HF_HUB_OFFLINE=1 .venv/bin/python tests/data/make_old_index.py

The index records its model by its resolved path: the tiny stand-in is copied to ``MODEL_COPY`` (in /tmp, which
every machine has) and opened from there, so ``tests/test_old_index.py`` can put its own build of the same stand-in
(seed 0) at that path and open the folder on any machine. The documents are ingested from ``DOCS_COPY`` for the same
reason (sources are recorded by path).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import standins  # noqa: E402

TEXTS = {
    "bamboo.md": "# 竹子\n\n竹子是禾本科的多年生植物，生长很快。熊猫主要以竹子为食。\n\nBamboo is a fast-growing grass.",  # noqa: E501
    "tea.txt": "龙井茶产于杭州西湖一带，是中国十大名茶之一。Longjing tea comes from Hangzhou.",
    "rust.txt": "Rust is a systems programming language focused on safety and speed. 它没有垃圾回收器。",
}
MODEL_COPY = Path("/tmp/m3e-rag-old-index-model")
DOCS_COPY = Path("/tmp/m3e-rag-old-index-docs")


def main() -> None:
    from m3e_rag import RAGPipeline

    model = standins.tiny_m3e()
    out = Path(__file__).resolve().parent / "index-0.1.0"
    if out.exists():
        shutil.rmtree(out)
    shutil.rmtree(DOCS_COPY, ignore_errors=True)
    shutil.copytree(Path(__file__).resolve().parent / "old-index-docs", DOCS_COPY)
    shutil.rmtree(MODEL_COPY, ignore_errors=True)
    shutil.copytree(model, MODEL_COPY)
    pipe = RAGPipeline(out, model_name=str(MODEL_COPY), collection="old_index")
    report = pipe.ingest([DOCS_COPY / name for name in sorted(TEXTS)])
    print(report)


if __name__ == "__main__":
    main()
