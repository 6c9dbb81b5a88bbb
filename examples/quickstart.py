"""The main job: ingest the bilingual sample documents into an embedded Chroma index, answer queries.

Run: python examples/quickstart.py [--index DIR]   (README: bash scripts/demo.sh)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model import pick_model, run  # noqa: E402

from m3e_rag import RAGPipeline  # noqa: E402
from m3e_rag.retrieve.snippets import SCORE_MEANINGS, score_label, snippet  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
QUERIES = [
    ("大熊猫吃什么？", "dense"),
    ("How tall is the Eiffel Tower?", "dense"),
    ("长城是什么时候修建的？", "hybrid"),
    ("Which plants make oxygen from sunlight?", "hybrid"),
    ("泡绿茶用多少度的水？", "hybrid"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default=str(Path(__file__).resolve().parent / ".index"))
    parser.add_argument("-k", type=int, default=2)
    args = parser.parse_args(argv)

    rag = RAGPipeline(args.index, model_name=pick_model())
    report = rag.ingest(DATA)
    print(
        f"Ingested {report.documents} documents from {DATA}: {report.chunks_added} chunks added, "
        f"{report.chunks_unchanged} unchanged, {report.texts_embedded} texts embedded in {report.seconds:.1f} s."
    )
    for skipped in report.files_skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}")
    for query, mode in QUERIES:
        label = score_label(mode)  # cosine (dense), fused (hybrid): what the number beside each hit is
        print(f"\nQ ({mode}): {query}")
        for rank, hit in enumerate(rag.search(query, k=args.k, mode=mode), 1):
            # The text around the query's words, not its first characters: the answer may lie anywhere in a chunk.
            shown = snippet(hit.text, query, width=120)  # terminal columns
            print(f"  {rank}. [{label} {hit.score:.3f}] {Path(hit.source or '?').name}: {shown}")
    print()
    for label in dict.fromkeys(score_label(mode) for _, mode in QUERIES):
        print(f"{label}: {SCORE_MEANINGS[label]}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
