"""Write ``tests/data/index-0.1.0/``: an index folder made by m3e-rag 0.1.0 before the package moved (issue 19).

Run once, from the repository root, on the code of commit e7d6006 (the last flat layout)::

    HF_HUB_OFFLINE=1 .venv/bin/python tests/data/make_old_index.py

The model is recorded by the relative name ``m3e-tiny-seed0`` (the tiny stand-in's folder, opened from
the stand-in cache directory), so ``tests/test_old_index.py`` can open the folder on any machine.
"""

from __future__ import annotations

import os
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


def main() -> None:
    from m3e_rag import RAGPipeline

    model = standins.tiny_m3e()
    out = Path(__file__).resolve().parent / "index-0.1.0"
    if out.exists():
        shutil.rmtree(out)
    docs = Path(__file__).resolve().parent / "old-index-docs"
    os.chdir(model.parent)
    pipe = RAGPipeline(out, model_name=model.name, collection="old_index")
    report = pipe.ingest([docs / name for name in sorted(TEXTS)])
    print(report)


if __name__ == "__main__":
    main()
