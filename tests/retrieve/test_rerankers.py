"""Second-stage rerankers: CrossEncoder folders, callables, objects, offline errors, the CLI flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m3e_rag import RAGPipeline
from m3e_rag.errors import InputError, ModelLoadError
from m3e_rag.retrieve.rerank import (
    RERANKERS,
    CallableReranker,
    CrossEncoderReranker,
    load_reranker,
    rerank,
    resolve_reranker_name,
)
from m3e_rag.types import RetrievedChunk
from tests.support import standins

TEXTS = ["大熊猫主要吃竹子。", "The Great Wall is in northern China.", "长江是中国最长的河流。", "Pandas eat bamboo."]


@pytest.fixture(scope="module")
def cross_encoder_path() -> Path:
    """A CrossEncoder on the tiny M3E (random head): the loading and calling path of bge-reranker-*."""
    return standins.tiny_cross_encoder()


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> RAGPipeline:
    rag = RAGPipeline(tmp_path_factory.mktemp("rerank") / "idx", model_name=str(tiny_model_path))
    rag.ingest(texts=TEXTS, sources=[f"t{i}" for i in range(len(TEXTS))])
    return rag


def by_length(query: str, texts: list[str]) -> list[float]:
    """A reranker that prefers short texts (deterministic, easy to check)."""
    return [-float(len(t)) for t in texts]


@pytest.mark.slow
def test_cross_encoder_folder_loads_lazily_once_and_scores(cross_encoder_path: Path) -> None:
    reranker = load_reranker(str(cross_encoder_path))
    assert isinstance(reranker, CrossEncoderReranker)
    again = load_reranker(cross_encoder_path, max_length=64)
    assert isinstance(again, CrossEncoderReranker) and again.max_length == 64
    model = reranker.load()
    assert CrossEncoderReranker(str(cross_encoder_path)).load() is model  # shared within the process
    assert reranker.is_loaded
    scores = reranker.predict([("熊猫吃什么", TEXTS[0]), ("熊猫吃什么", TEXTS[1])], batch_size=2)
    assert scores.shape == (2,) and np.isfinite(scores).all()
    hits = [RetrievedChunk(f"c{i}", t, 0.5) for i, t in enumerate(TEXTS)]
    out = rerank(reranker, "熊猫吃什么", hits)
    assert sorted(r.id for r in out) == [h.id for h in hits]
    assert all(r.metadata["retrieval_score"] == 0.5 for r in out)
    assert [r.score for r in out] == sorted((r.score for r in out), reverse=True)


def test_callables_and_objects_are_accepted() -> None:
    reranker = load_reranker(by_length)
    assert isinstance(reranker, CallableReranker)
    hits = [RetrievedChunk(f"c{i}", t, 0.1 * i) for i, t in enumerate(TEXTS)]
    assert [r.text for r in rerank(reranker, "q", hits)] == sorted(TEXTS, key=len)

    class Scorer:
        def predict(self, pairs: list[tuple[str, str]], **kwargs: object) -> list[float]:
            return [1.0] * len(pairs)

    scorer = Scorer()
    assert load_reranker(scorer) is scorer  # type: ignore[comparison-overlap]

    wrong = load_reranker(lambda query, texts: [1.0])
    with pytest.raises(InputError, match="returned 1 scores for 4 texts"):
        rerank(wrong, "q", hits)
    with pytest.raises(InputError, match="accept two arguments"):
        load_reranker(lambda texts: texts)
    with pytest.raises(InputError, match="reranker must be a name"):
        load_reranker(42)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="apply to a reranker name or folder only"):
        load_reranker(by_length, device="cpu")


def test_registry_and_names() -> None:
    assert set(RERANKERS) >= {"bge-reranker-base", "bge-reranker-large"}
    base = RERANKERS["bge-reranker-base"]
    assert base.hub_id == "BAAI/bge-reranker-base" and "zh" in base.languages and base.licence == "MIT"
    assert base.to_dict()["model_card"] == "https://huggingface.co/BAAI/bge-reranker-base"
    assert resolve_reranker_name("bge-reranker-large") == "BAAI/bge-reranker-large"
    assert resolve_reranker_name("my-org/my-reranker") == "my-org/my-reranker"
    assert CrossEncoderReranker("bge-reranker-base").spec is base


def test_offline_and_bad_folders_raise_model_load_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reranker = load_reranker("bge-reranker-base", cache_folder=str(tmp_path / "hf"))
    assert isinstance(reranker, CrossEncoderReranker) and not reranker.is_loaded  # constructing loads nothing
    with pytest.raises(ModelLoadError, match=r"reranker 'BAAI/bge-reranker-base'.*HF_HUB_OFFLINE=1.*HF_ENDPOINT"):
        reranker.load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_reranker(tmp_path / "empty").predict([("q", "t")])
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_reranker(str(tmp_path / "missing" / "folder")).predict([("q", "t")])


def test_pipeline_search_reranks_with_a_callable(tiny_pipeline: RAGPipeline) -> None:
    plain = tiny_pipeline.search("熊猫", k=4, mode="hybrid")
    reranked = tiny_pipeline.search("熊猫", k=4, mode="hybrid", reranker=by_length)
    assert sorted(r.id for r in plain) == sorted(r.id for r in reranked)
    assert [r.text for r in reranked] == sorted((r.text for r in plain), key=len)
    assert all("retrieval_score" in r.metadata for r in reranked)


@pytest.mark.slow
def test_cli_reranker_flag_on_search_and_eval(tmp_path: Path, tiny_model_path: Path,
                                              cross_encoder_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from m3e_rag.cli.dispatch import main

    index = tmp_path / "idx"
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(TEXTS):
        (docs / f"{i}.txt").write_text(text, encoding="utf-8")
    common = ["--model", str(tiny_model_path)]
    assert main(["ingest", str(docs), "--index", str(index), *common]) == 0
    capsys.readouterr()
    assert main(["search", "熊猫", "--index", str(index), "--mode", "hybrid", "--reranker", str(cross_encoder_path),
                 "-k", "3", "--json", *common]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and all("retrieval_score" in h["metadata"] for h in hits)

    squad = {"data": [{"title": "t", "paragraphs": [
        {"context": text, "qas": [{"id": f"q{i}", "question": text[:4]}]} for i, text in enumerate(TEXTS)]}]}
    queries = tmp_path / "squad.json"
    queries.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    assert main(["eval", "--queries", str(queries), "--modes", "dense,hybrid", "--reranker", str(cross_encoder_path),
                 "--compare", "dense,hybrid;hybrid,hybrid+rerank", "--json", *common]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"dense", "dense+rerank", "hybrid", "hybrid+rerank", "paired"}
    assert [(p["baseline"], p["other"]) for p in data["paired"]] == [("dense", "hybrid"), ("hybrid", "hybrid+rerank")]
    assert all(p["queries"] == 4 and p["wins"] + p["losses"] + p["ties"] == 4 for p in data["paired"])
    # Without --json the comparisons are printed under the table by default.
    assert main(["eval", "--queries", str(queries), "--modes", "dense,hybrid", *common]) == 0
    assert "hybrid - dense mrr@10:" in capsys.readouterr().out
    assert main(["eval", "--queries", str(queries), "--modes", "dense", "--compare", "dense,hybrid", *common]) != 0
    assert "--compare names 'hybrid', which is not evaluated" in capsys.readouterr().err
    assert main(["search", "熊猫", "--index", str(index), "--rerank-top-n", "5", *common]) != 0
    assert "--rerank-top-n needs --reranker" in capsys.readouterr().err
