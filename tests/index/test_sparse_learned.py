"""The learned-sparse index: FlagEmbedding's lexical matching score from the BM25 postings store, persisted.

No model is needed: weights are given as the model's sparse output would give them (token id -> weight).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from m3e_rag.errors import InputError, StoreError
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.index.sparse.folder import SparseFolder
from m3e_rag.index.sparse.learned import LearnedSparseIndex
from m3e_rag.index.sparse.learned_side import LearnedFolder, learned_folder


def lexical_score(q: dict[str, float], d: dict[str, float]) -> float:
    """FlagEmbedding's ``compute_lexical_matching_score``, written out as the reference."""
    return sum(w * d[t] for t, w in q.items() if t in d)


def random_docs(n: int, seed: int = 7) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    return {
        f"c{i}": {str(rng.randrange(60)): round(rng.uniform(0.01, 0.4), 6) for _ in range(rng.randrange(1, 12))}
        for i in range(n)
    }


QUERIES = [{"3": 0.2, "7": 0.1}, {"11": 0.33}, {"0": 0.05, "1": 0.05, "2": 0.3, "59": 0.2}, {"999": 1.0}]


def brute(docs: dict[str, dict[str, float]], q: dict[str, float], allowed: set[str] | None = None) -> list[str]:
    scored = [(cid, lexical_score(q, d)) for cid, d in docs.items() if allowed is None or cid in allowed]
    return [cid for cid, s in sorted(scored, key=lambda p: (-p[1], p[0])) if s > 0]


def check_equal(index: LearnedSparseIndex, docs: dict[str, dict[str, float]]) -> None:
    allowed = {cid for i, cid in enumerate(sorted(docs)) if i % 3 == 0}
    for q in QUERIES:
        for subset in (None, allowed):
            got = index.search(q, 100, allowed_ids=subset)
            assert [cid for cid, _ in got] == brute(docs, q, subset)
            for cid, score in got:
                assert score == pytest.approx(lexical_score(q, docs[cid]), abs=1e-6)


def test_scores_equal_the_lexical_matching_score_through_writes_deletes_and_compaction() -> None:
    docs = random_docs(300)
    index = LearnedSparseIndex()
    index.upsert_weights(list(docs), list(docs.values()))
    check_equal(index, docs)
    replaced = random_docs(40, seed=9)
    for i, cid in enumerate(sorted(docs)[:40]):  # upsert of held ids replaces their weights
        docs[cid] = replaced[f"c{i}"]
        index.upsert_weights([cid], [docs[cid]])
    index.delete(sorted(docs)[-30:])
    for cid in sorted(docs)[-30:]:
        del docs[cid]
    check_equal(index, docs)
    index.compact()
    check_equal(index, docs)
    assert index.weights("c0") == pytest.approx(docs["c0"])


def test_bad_weights_are_refused_naming_the_entry_and_nothing_is_stored() -> None:
    index = LearnedSparseIndex()
    index.upsert_weights(["a"], [{"5": 0.5}])
    with pytest.raises(InputError, match="token '6'.*>= 0"):
        index.upsert_weights(["b", "c"], [{"5": 0.1}, {"6": -0.2}])
    with pytest.raises(InputError, match="not a number"):
        index.upsert_weights(["b"], [{"5": "x"}])  # type: ignore[dict-item]
    with pytest.raises(InputError, match="2 ids but 1"):
        index.upsert_weights(["b", "c"], [{"5": 0.1}])
    with pytest.raises(InputError, match="not texts"):
        index.upsert(["b"], ["some text"])
    with pytest.raises(InputError, match="lexical weights, not its text"):
        index.search("a query", 3)
    assert index.ids() == {"a"}
    assert index.search({"5": 1.0}, 3) == [("a", pytest.approx(0.5))]


def test_zero_weights_are_dropped_and_never_match() -> None:
    index = LearnedSparseIndex()
    index.upsert_weights(["a", "b"], [{"1": 0.0, "2": 0.3}, {"1": 0.4}])
    assert index.weights("a") == pytest.approx({"2": 0.3})
    assert index.search({"1": 1.0}, 5) == [("b", pytest.approx(0.4))]


def test_the_folder_keeps_weights_across_log_replay_and_snapshots(tmp_path: Path) -> None:
    docs = random_docs(120)
    folder = tmp_path / "sparse_learned"
    disk = LearnedFolder.create(folder, generation=1)
    ids = list(docs)
    disk.upsert_weights(ids[:60], [docs[c] for c in ids[:60]], generation=2)
    disk.upsert_weights(ids[60:], [docs[c] for c in ids[60:]], generation=3)
    disk.delete(ids[:5], generation=4)
    for cid in ids[:5]:
        del docs[cid]
    replayed = LearnedFolder.open(folder, writable=False)  # snapshot + log
    assert replayed.generation == 4
    check_equal(replayed.learned, docs)
    disk.compact()
    reopened = LearnedFolder.open(folder, writable=False)  # snapshot only, weights memory-mapped
    check_equal(reopened.learned, docs)
    meta = json.loads(next(folder.glob("snap-*/meta.json")).read_text(encoding="utf-8"))
    assert meta["tokenizer_version"] == LearnedSparseIndex.TERMS_VERSION and "bm25" not in meta


def test_a_bm25_folder_and_a_learned_folder_refuse_each_other(tmp_path: Path) -> None:
    bm25 = SparseIndex()
    bm25.upsert(["a"], ["北京烤鸭"])
    SparseFolder.create(tmp_path / "bm25", bm25)
    LearnedFolder.create(tmp_path / "learned")
    with pytest.raises(StoreError, match="tokenized by .*rebuild"):
        LearnedFolder.open(tmp_path / "bm25")
    with pytest.raises(StoreError, match="tokenized by .*rebuild"):
        SparseFolder.open(tmp_path / "learned")


def test_a_log_record_without_weights_is_damage_not_silence(tmp_path: Path) -> None:
    folder = tmp_path / "sparse_learned"
    disk = LearnedFolder.create(folder, generation=1)
    disk._append({"op": "g", "gen": 2})
    log = next(folder.glob("snap-*/log.jsonl"))
    import zlib

    body = json.dumps({"op": "u", "ids": ["a"], "terms": [["1"]], "gen": 3}).encode()
    with open(log, "ab") as handle:
        handle.write(b"%08x " % zlib.crc32(body) + body + b"\n")
        handle.write(b"%08x " % zlib.crc32(b'{"op":"g","gen":4}') + b'{"op":"g","gen":4}\n')
    with pytest.raises(StoreError, match="bad record.*rebuild"):
        LearnedFolder.open(folder)


def test_the_learned_folder_sits_beside_the_bm25_folder(tmp_path: Path) -> None:
    assert learned_folder(tmp_path / "sparse_bm25") == tmp_path / "sparse_learned"
    assert learned_folder(tmp_path / "sparse_bm25-docs") == tmp_path / "sparse_learned-docs"
    assert learned_folder(tmp_path / "0123abcd") == tmp_path / "0123abcd-learned"
