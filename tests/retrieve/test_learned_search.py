"""BGE-M3's learned-sparse output and ColBERT in the pipeline: ingest, search modes, filters, persistence.

The BGE-M3-shaped stand-in has random heads: these tests check the plumbing (the scores are FlagEmbedding's
formulas over the model's own outputs), never retrieval quality.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3e_rag import RAGPipeline
from m3e_rag.encode.bge_m3 import colbert_score, combined_score, lexical_score
from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.errors import InputError
from m3e_rag.index.sparse.learned_side import learned_folder
from m3e_rag.retrieve.fusion import fuse_hybrid
from tests.support import standins

TEXTS = [
    "北京烤鸭是北京最有名的菜，很多游客专门去吃烤鸭。",
    "上海的外滩和陆家嘴是游客常去的地方。",
    "Python is a popular programming language for data science.",
    "中国茶文化历史悠久，绿茶、红茶和乌龙茶各有特色。",
    "北京大学和清华大学都是中国著名的高等学府。",
    "The Great Wall of China stretches thousands of kilometres.",
    "杭州西湖的龙井茶非常有名。",
    "Machine learning models learn patterns from data.",
]
IDS = [f"t{i}" for i in range(len(TEXTS))]
METAS = [{"lang": "en" if t.isascii() else "zh", "n": i} for i, t in enumerate(TEXTS)]
QUERY = "北京的茶和 data"


class Counting:
    """Wraps an encoder's two document paths to count forward passes."""

    def __init__(self, encoder: M3EEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int, dict[str, Any]]] = []
        dense, outputs = encoder.encode_documents, encoder.encode_outputs

        def encode_documents(texts: Any) -> Any:
            self.calls.append(("documents", len(texts), {}))
            return dense(texts)

        def encode_outputs(texts: Any, kind: str = "document", **flags: Any) -> Any:
            self.calls.append((f"outputs:{kind}", len(texts), flags))
            return outputs(texts, kind, **flags)

        monkeypatch.setattr(encoder, "encode_documents", encode_documents)
        monkeypatch.setattr(encoder, "encode_outputs", encode_outputs)


@pytest.fixture(scope="module")
def heads_encoder() -> M3EEncoder:
    return M3EEncoder(str(standins.bge_m3_standin()))


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory, heads_encoder: M3EEncoder) -> Iterator[RAGPipeline]:
    pipeline = RAGPipeline(tmp_path_factory.mktemp("learned") / "idx", encoder=heads_encoder)
    pipeline.add_texts(TEXTS, metadatas=METAS, ids=IDS)
    yield pipeline


def doc_outputs(encoder: M3EEncoder) -> Any:
    return encoder.encode_outputs(TEXTS, "document", sparse=True, colbert=True)


def test_ingest_stores_the_models_lexical_weights_from_the_same_forward_pass(
    tmp_path: Path, heads_encoder: M3EEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = Counting(heads_encoder, monkeypatch)
    pipeline = RAGPipeline(tmp_path / "idx", encoder=heads_encoder, chunk_tokens=64, overlap_tokens=8)
    report = pipeline.ingest(texts=TEXTS, sources=[f"s{i}" for i in range(len(TEXTS))])
    assert report.chunks_added == len(TEXTS)
    kinds = [kind for kind, _, _ in counting.calls]
    assert "documents" not in kinds  # never a second, dense-only pass
    assert all(k == "outputs:document" and flags == {"sparse": True} for k, _, flags in counting.calls)
    assert sum(n for _, n, _ in counting.calls) == len(TEXTS)
    learned = pipeline._index.learned_index
    assert learned is not None and learned.ids() == set(pipeline.store.all_ids())
    expected = dict(zip(TEXTS, heads_encoder.encode_outputs(TEXTS, sparse=True).lexical, strict=True))
    for record in pipeline.store.get(ids=sorted(learned.ids())):
        assert learned.weights(record.id) == pytest.approx(expected[record.text], rel=1e-6)
    assert (tmp_path / "idx" / "sparse_learned" / "CURRENT").exists()


def test_sparse_mode_ranks_by_the_lexical_matching_score_and_bm25_stays_by_name(
    rag: RAGPipeline, heads_encoder: M3EEncoder
) -> None:
    q_lex = heads_encoder.encode_outputs([QUERY], "query", sparse=True).lexical[0]
    d_lex = doc_outputs(heads_encoder).lexical
    want = sorted(((IDS[i], lexical_score(q_lex, d)) for i, d in enumerate(d_lex)), key=lambda p: (-p[1], p[0]))
    want = [p for p in want if p[1] > 0]
    got = rag.search(QUERY, k=len(TEXTS), mode="sparse")
    assert [h.id for h in got] == [i for i, _ in want]
    assert [h.score for h in got] == pytest.approx([s for _, s in want], rel=1e-5)
    assert rag.search(QUERY, k=len(TEXTS), mode="sparse", sparse="learned") == got
    bm25 = rag.search(QUERY, k=len(TEXTS), mode="sparse", sparse="bm25")
    assert [(h.id, h.score) for h in bm25] == [
        (i, pytest.approx(s)) for i, s in rag.sparse_index.search(QUERY, len(TEXTS))
    ]


@pytest.mark.parametrize("filters", [{"where": {"lang": "zh"}}, {"where_document": {"$contains": "茶"}}])
def test_learned_sparse_filters_are_exact(rag: RAGPipeline, heads_encoder: M3EEncoder,
                                          filters: dict[str, Any]) -> None:
    everything = [h.id for h in rag.search(QUERY, k=len(TEXTS), mode="sparse")]
    allowed = {r.id for r in rag.store.get(ids=IDS)
               if ("where" in filters and r.metadata["lang"] == "zh")
               or ("where_document" in filters and "茶" in r.text)}
    got = [h.id for h in rag.search(QUERY, k=3, mode="sparse", **filters)]
    assert got == [i for i in everything if i in allowed][:3]


def test_hybrid_fuses_dense_with_the_learned_list_in_place_of_bm25(rag: RAGPipeline) -> None:
    dense = rag.search(QUERY, k=20, mode="dense")
    learned = rag.search(QUERY, k=20, mode="sparse")
    want = fuse_hybrid(dense, learned, rag.hybrid_weights, 1.0)
    got = rag.search(QUERY, k=5, mode="hybrid")
    assert [h.id for h in got] == [h.id for h in want][:5]
    assert [h.score for h in got] == pytest.approx([h.score for h in want][:5], abs=1e-5)
    assert rag.search(QUERY, k=5) == got  # the default mode is hybrid, with the model's own sparse list
    bm25 = fuse_hybrid(dense, rag.search(QUERY, k=20, mode="sparse", sparse="bm25"), rag.hybrid_weights, 1.0)
    assert [h.id for h in rag.search(QUERY, k=5, sparse="bm25")] == [h.id for h in bm25][:5]


def test_colbert_rescores_the_fused_candidates_with_flagembeddings_combination(
    rag: RAGPipeline, heads_encoder: M3EEncoder
) -> None:
    fused = rag.search(QUERY, k=len(TEXTS), mode="hybrid", fetch_k=len(TEXTS))
    q = heads_encoder.encode_outputs([QUERY], "query", sparse=True, colbert=True)
    docs = doc_outputs(heads_encoder)
    at = {i: n for n, i in enumerate(IDS)}
    want = {}
    for hit in fused:
        n = at[hit.id]
        want[hit.id] = combined_score(float(docs.dense[n] @ q.dense[0]), lexical_score(q.lexical[0], docs.lexical[n]),
                                      colbert_score(q.colbert[0], docs.colbert[n]))
    got = rag.search(QUERY, k=len(TEXTS), mode="hybrid", fetch_k=len(TEXTS), colbert=True)
    assert {h.id for h in got} == {h.id for h in fused}
    assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)
    for hit in got:
        assert hit.score == pytest.approx(want[hit.id], abs=1e-5)


def test_bad_choices_are_refused_with_the_fix(rag: RAGPipeline, tmp_path: Path, tiny_model_path: Path) -> None:
    with pytest.raises(InputError, match="sparse must be one of auto, bm25, learned"):
        rag.search(QUERY, sparse="splade")
    with pytest.raises(InputError, match="mode='dense' ranks none"):
        rag.search(QUERY, mode="dense", sparse="bm25")
    with pytest.raises(InputError, match="colbert must be True or False"):
        rag.search(QUERY, colbert="yes")  # type: ignore[arg-type]
    m3e = RAGPipeline(tmp_path / "m3e", model_name=str(tiny_model_path))
    m3e.add_texts(TEXTS[:3])
    with pytest.raises(InputError, match="sparse='learned' needs a model with a sparse head.*sparse='bm25'"):
        m3e.search(QUERY, sparse="learned")
    with pytest.raises(InputError, match="no sparse or colbert output"):
        m3e.search(QUERY, colbert=True)
    assert len(m3e.search(QUERY, k=3)) == 3  # auto: BM25 hybrid for a model without heads, nothing lost
    assert not learned_folder(tmp_path / "m3e" / "sparse_bm25").exists()


def test_the_learned_side_reopens_from_disk_and_is_rebuilt_when_lost(
    rag: RAGPipeline, heads_encoder: M3EEncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    want = rag.search(QUERY, k=5, mode="sparse")
    counting = Counting(heads_encoder, monkeypatch)
    again = RAGPipeline(rag.index_path, encoder=heads_encoder)
    assert again.search(QUERY, k=5, mode="sparse") == want
    assert [c for c in counting.calls if c[0] == "outputs:document"] == []  # opened from its folder, no re-encode
    shutil.rmtree(learned_folder(rag.index_path / "sparse_bm25"))
    with caplog.at_level("INFO", logger="m3e_rag.index.sparse.sync"):
        rebuilt = RAGPipeline(rag.index_path, encoder=heads_encoder)
        got = rebuilt.search(QUERY, k=5, mode="sparse")
    catching_up = [r.getMessage() for r in caplog.records if "is behind the store" in r.getMessage()]
    assert catching_up and all(m.startswith("learned-sparse index is behind") for m in catching_up), catching_up
    assert [h.id for h in got] == [h.id for h in want]
    # Re-encoded, so equal up to fp32 summation order: the torch backend packs its Linears for oneDNN once enough
    # tokens have arrived (ONEDNN_AFTER_TOKENS), which may fall between the two encodings (measured 1.9e-6 apart).
    assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5)
    assert sum(n for kind, n, _ in counting.calls if kind == "outputs:document") == len(TEXTS)
    assert np.isfinite([h.score for h in got]).all()


def test_doctor_checks_the_learned_folder_and_repair_hands_it_back_to_the_model(
    tmp_path: Path, heads_encoder: M3EEncoder
) -> None:
    from m3e_rag.index.doctor import diagnose, repair

    pipeline = RAGPipeline(tmp_path / "idx", encoder=heads_encoder)
    pipeline.add_texts(TEXTS, ids=IDS)
    want = pipeline.search(QUERY, k=4, mode="sparse")
    del pipeline
    report = diagnose(tmp_path / "idx")
    learned = [c for c in report.checks if c.name == "learned"]
    assert report.healthy and len(learned) == 1 and learned[0].ok and report.counts["learned"] == len(TEXTS)
    folder = learned_folder(tmp_path / "idx" / "sparse_bm25")
    (folder / "CURRENT").write_text("{broken", encoding="utf-8")
    damaged = diagnose(tmp_path / "idx")
    check = next(c for c in damaged.checks if c.name == "learned")
    assert damaged.healthy and not check.ok and check.level == "warning" and "unusable" in check.detail
    fixed = repair(tmp_path / "idx")
    assert any("learned-sparse" in line for line in fixed.repaired) and not folder.exists()
    again = RAGPipeline(tmp_path / "idx", encoder=heads_encoder).search(QUERY, k=4, mode="sparse")
    assert [h.id for h in again] == [h.id for h in want]


def test_the_cli_search_takes_sparse_and_colbert(rag: RAGPipeline, tmp_path: Path, tiny_model_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from m3e_rag.cli.dispatch import main

    index = str(rag.index_path)
    for flags, want in (
        ([], rag.search(QUERY, k=3, mode="sparse")),
        (["--sparse", "bm25"], rag.search(QUERY, k=3, mode="sparse", sparse="bm25")),
        (["--colbert"], rag.search(QUERY, k=3, mode="sparse", colbert=True)),
    ):
        assert main(["search", QUERY, "--index", index, "-k", "3", "--mode", "sparse", "--json", *flags]) == 0
        got = json.loads(capsys.readouterr().out)
        assert [h["id"] for h in got] == [h.id for h in want]
    assert main(["search", QUERY, "--index", index, "-k", "2", "--mode", "sparse"]) == 0
    assert "(lexical: the model's lexical matching score" in capsys.readouterr().out
    m3e = RAGPipeline(tmp_path / "m3e", model_name=str(tiny_model_path))
    m3e.add_texts(TEXTS[:3])
    code = main(["search", QUERY, "--index", str(tmp_path / "m3e"), "--sparse", "learned"])
    err = capsys.readouterr().err
    assert code != 0 and "--sparse 'learned' needs a model with a sparse head" in err and len(err.splitlines()) == 1


def test_deletes_reach_the_learned_side(tmp_path: Path, heads_encoder: M3EEncoder) -> None:
    pipeline = RAGPipeline(tmp_path / "idx", encoder=heads_encoder)
    pipeline.add_texts(TEXTS, ids=IDS)
    top = pipeline.search(QUERY, k=1, mode="sparse")[0].id
    pipeline.delete(ids=[top])
    learned = pipeline._index.learned_index
    assert learned is not None and top not in learned.ids() and len(learned) == len(TEXTS) - 1
    assert top not in {h.id for h in pipeline.search(QUERY, k=len(TEXTS), mode="sparse")}
    reopened = RAGPipeline(tmp_path / "idx", encoder=heads_encoder)._index.learned_index
    assert reopened is not None and reopened.ids() == learned.ids()  # the delete was logged
