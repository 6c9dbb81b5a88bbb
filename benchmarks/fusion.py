"""Fusion replay: dense, BM25 and hybrid variants on cached candidate rankings (issue #13).

Two steps::

    python benchmarks/fusion.py cache --data ../shared/data     # index each corpus once, cache candidates
    python benchmarks/fusion.py replay                          # score ~40 variants in a few minutes

``cache`` builds one index per corpus through ``RAGPipeline`` (bilingual stand-in model unless
``--model``), embeds every set's queries once and writes each query's dense and BM25 top-50 chunks
with scores, its BM25 coverage and its terms' document frequencies to
``benchmarks/.cache/fusion/<set>.json`` (git-ignored; about 7 minutes on 2 quiet cores).
``replay`` fuses the cached candidates with every variant at ``fetch_k`` 20 and 40, scores passages
as ``m3e-rag eval`` does, chooses a variant on the CHOOSE sets only, reports it on the CONFIRM sets,
prints the sets x modes table and a paired per-query comparison (wins, losses, bootstrap 95% CI),
and writes ``benchmarks/results/fusion.json``. Sets: see ``_fusion_sets.py``. All figures are made
with a stand-in model: pipeline figures, not M3E's. The data is never copied into the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fusion_replay import replay  # noqa: E402
from _fusion_sets import SETS  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "fusion"
RESULTS = Path(__file__).resolve().parent / "results" / "fusion.json"


def _cache(args: argparse.Namespace) -> None:
    from _fusion_cache import cache_set

    from m3e_rag.encode.encoder import M3EEncoder

    model = args.model
    if model is None:
        from tests.support.standins import bilingual_standin

        model = str(bilingual_standin())
    encoder = M3EEncoder(model)
    args.cache.mkdir(parents=True, exist_ok=True)
    for name in args.sets.split(","):
        cache_set(name, args.data, args.cache, encoder, args.limit)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``cache`` builds the candidate caches, ``replay`` scores fusion variants."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="index each corpus once and cache every query's candidates")
    c.add_argument("--data", type=Path, required=True, help="folder with cmrc2018/ and xquad/")
    c.add_argument("--cache", type=Path, default=CACHE)
    c.add_argument("--sets", default=",".join(SETS))
    c.add_argument("--model", default=None, help="model folder (default: the bilingual stand-in)")
    c.add_argument("--limit", type=int, default=None)
    r = sub.add_parser("replay", help="score fusion variants on the caches; choose on some sets, confirm on others")
    r.add_argument("--cache", type=Path, default=CACHE)
    r.add_argument("--out", type=Path, default=RESULTS)
    r.add_argument("--depths", default="20,40", help="fetch_k values (20: search default; 40: what eval uses)")
    r.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the paired comparison")
    args = parser.parse_args(argv)
    if args.cmd == "cache":
        _cache(args)
    else:
        replay(args.cache, args.out, depths=tuple(int(d) for d in args.depths.split(",")), resamples=args.resamples)


if __name__ == "__main__":
    main()
