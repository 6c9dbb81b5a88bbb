"""The encoders alone on the service's texts: how much of a server's texts/s the model itself allows.

Run by ``benchmarks/serve.py --encoder-rows`` in its own process (every CPU allowed), over the same short
texts the load generator sends, in the slices a saturated server encodes (``--slice`` texts at a time,
64 by default: the service's ``--max-batch-texts`` until issue 25 set it to 16; pass ``--slice 16`` for
today's). Rows: ``M3EEncoder`` with the torch backend at
forward-pass batch sizes 8 and 32 and with ``onnx-int8`` and ``onnx-int8-fast``, and
``SentenceTransformer.encode`` (what infinity-emb's torch engine and the naive server run) at its default
batch size 32. Prints one JSON object: texts/s per row (median of ``--rounds``), with the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _corpus  # noqa: E402


def _rate(encode: Any, texts: list[str], size: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(texts), size):
        encode(texts[i : i + size])
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--slice", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--round-short", action="store_true",
                    help="round short batches up to a multiple of 8 tokens too (the torch backend before issue 25)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.round_short:
        import m3e_rag.encode.torch_backend as backend

        backend.PAD_FROM_LENGTH = 0
    from sentence_transformers import SentenceTransformer

    from m3e_rag.encode.encoder import M3EEncoder

    texts = _corpus.short_queries(args.data, 512, seed=7)
    rows: dict[str, Any] = {
        "m3e-rag torch bs8": M3EEncoder(str(args.model), batch_size=8).encode_documents,
        "m3e-rag torch bs32": M3EEncoder(str(args.model), batch_size=32).encode_documents,
        "m3e-rag onnx-int8 bs8": M3EEncoder(str(args.model), batch_size=8, backend="onnx-int8").encode_documents,
        "m3e-rag onnx-int8 bs32": M3EEncoder(str(args.model), batch_size=32, backend="onnx-int8").encode_documents,
        "m3e-rag onnx-int8-fast bs8": M3EEncoder(str(args.model), batch_size=8,
                                                 backend="onnx-int8-fast").encode_documents,
        "m3e-rag onnx-int8-fast bs32": M3EEncoder(str(args.model), batch_size=32,
                                                  backend="onnx-int8-fast").encode_documents,
    }
    st = SentenceTransformer(str(args.model), device="cpu")
    rows["sentence-transformers bs32"] = lambda batch: st.encode(batch, batch_size=32, normalize_embeddings=True)
    for encode in rows.values():  # warm-up, and the torch encoder's oneDNN packing after its first tokens
        _rate(encode, texts, args.slice)
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, encode in rows.items():
            rates[name].append(round(_rate(encode, texts, args.slice), 1))
    out = {name: {"texts_per_s": statistics.median(r), "min": min(r), "max": max(r)} for name, r in rates.items()}
    print(json.dumps({"slice": args.slice, "texts": len(texts), "round_short": args.round_short, "rows": out,
                      "loadavg": list(os.getloadavg())}))


if __name__ == "__main__":
    main()
