"""M3ENodeParser and M3EReader: m3e-rag's chunker and loaders as LlamaIndex parts (issue 8, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import MetadataMode, NodeRelationship, TextNode
from llama_index.embeddings.m3e import M3EEmbedding
from llama_index.node_parser.m3e import M3ENodeParser
from llama_index.readers.m3e import M3EReader
from llama_index.vector_stores.m3e import M3EVectorStore

from m3e_rag.errors import InputError

TEXT = ("大熊猫主要吃竹子。它们每天要花十几个小时进食！" * 4 + "\n\n" + "Pandas eat bamboo. They eat a lot. " * 3
        + "长城很长。" * 6)


@pytest.fixture(scope="module")
def emb(tiny_model_path: Path) -> M3EEmbedding:
    return M3EEmbedding(model_name=str(tiny_model_path))


def test_in_an_ingestion_pipeline_with_exact_spans_and_token_budget(emb: M3EEmbedding) -> None:
    parser = M3ENodeParser(embed_model=emb, chunk_tokens=24, overlap_tokens=4)
    doc = Document(text=TEXT, doc_id="doc-1", metadata={"title": "熊猫"})
    nodes = IngestionPipeline(transformations=[parser, emb]).run(documents=[doc])
    assert len(nodes) > 4
    tok = emb.encoder
    for i, node in enumerate(nodes):
        assert isinstance(node, TextNode) and node.embedding is not None and len(node.embedding) == 64
        assert TEXT[node.start_char_idx : node.end_char_idx] == node.get_content()
        assert node.ref_doc_id == "doc-1" and node.metadata == {"title": "熊猫"}
        embedded = node.get_content(metadata_mode=MetadataMode.EMBED)
        assert tok.count_tokens([embedded])[0] - 2 <= 24  # metadata included in the budget
        if i:
            assert node.relationships[NodeRelationship.PREVIOUS].node_id == nodes[i - 1].node_id
    assert nodes[0].start_char_idx == 0 and nodes[-1].end_char_idx == len(TEXT.rstrip())


def test_repeated_text_keeps_the_chunkers_offsets(emb: M3EEmbedding) -> None:
    text = "同一句话。" * 40
    nodes = M3ENodeParser(embed_model=emb, chunk_tokens=12, overlap_tokens=0).get_nodes_from_documents(
        [Document(text=text)])
    starts = [n.start_char_idx for n in nodes]
    assert starts == sorted(starts) and len(set(starts)) == len(starts) > 3  # str.find() would repeat offset 0
    assert all(text[n.start_char_idx : n.end_char_idx] == n.get_content() for n in nodes)


def test_long_metadata_shrinks_the_budget_or_is_refused(emb: M3EEmbedding) -> None:
    parser = M3ENodeParser(embed_model=emb, chunk_tokens=40, overlap_tokens=0)
    small = parser.get_nodes_from_documents([Document(text=TEXT)])
    big = parser.get_nodes_from_documents([Document(text=TEXT, metadata={"note": "注释" * 10})])
    assert len(big) > len(small)
    hidden = Document(text=TEXT, metadata={"note": "注释" * 10}, excluded_embed_metadata_keys=["note"])
    assert len(parser.get_nodes_from_documents([hidden])) == len(small)
    with pytest.raises(InputError, match="metadata takes"):
        parser.get_nodes_from_documents([Document(text=TEXT, metadata={"note": "注释" * 300})])


def test_splitter_names_are_aliases_and_the_rest_is_refused(emb: M3EEmbedding, tiny_model_path: Path) -> None:
    parser = M3ENodeParser(model_name=str(tiny_model_path), chunk_size=64, chunk_overlap=8)
    assert (parser.chunk_tokens, parser.overlap_tokens) == (64, 8)
    for kwargs, match in [
        ({"chunk_size": 1024}, "8 to 510"),
        ({"chunk_tokens": 64, "chunk_overlap": 40}, "overlap"),
        ({"separator": " "}, "'separator': the chunker cuts at sentence ends"),
        ({"bogus": 1}, "'bogus'.*Accepted: callback_manager"),
    ]:
        with pytest.raises(InputError, match=match):
            M3ENodeParser(embed_model=emb, **kwargs)
    with pytest.raises(InputError, match="'bogus'"):
        parser.get_nodes_from_documents([Document(text="x")], bogus=1)


def test_reader_decodes_gbk_and_big5_with_stable_ids(tmp_path: Path) -> None:
    (tmp_path / "gbk.txt").write_bytes("大熊猫主要吃竹子，每天进食十几个小时。".encode("gbk"))
    (tmp_path / "big5.txt").write_bytes("臺灣的高山茶很有名，茶葉香氣濃郁。".encode("big5"))
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01\x02" * 10)
    reader = M3EReader()
    docs = {Path(d.doc_id).name: d for d in reader.load_data(tmp_path, extra_info={"batch": 1})}
    assert docs["gbk.txt"].text == "大熊猫主要吃竹子，每天进食十几个小时。"
    assert docs["big5.txt"].text == "臺灣的高山茶很有名，茶葉香氣濃郁。"
    gbk = docs["gbk.txt"]
    assert gbk.doc_id == gbk.metadata["file_path"] == gbk.metadata["source"] and gbk.metadata["batch"] == 1
    assert "encoding" not in gbk.get_content(metadata_mode=MetadataMode.EMBED)
    assert [Path(s.path).name for s in reader.skipped] == ["bin.dat"]
    with pytest.raises(InputError, match="could not load 1 file"):
        M3EReader(raise_on_error=True).load_data([tmp_path])
    with pytest.raises(InputError, match="'encoding': each file's encoding is detected"):
        M3EReader(encoding="utf-8")
    with pytest.raises(InputError, match="'recursive'"):
        M3EReader().load_data(tmp_path, recursive=True)


def test_reader_parser_store_end_to_end(tmp_path: Path, emb: M3EEmbedding) -> None:
    (tmp_path / "gbk.txt").write_bytes(("大熊猫主要吃竹子。" * 8).encode("gbk"))
    docs = M3EReader().load_data(tmp_path)
    store = M3EVectorStore(persist_dir=str(tmp_path / "db"), embed_model=emb)
    pipeline = IngestionPipeline(transformations=[M3ENodeParser(embed_model=emb, chunk_tokens=20), emb],
                                 vector_store=store)
    nodes = pipeline.run(documents=docs)
    assert len(nodes) > 1
    hits = store.pipeline.search("竹子", k=10, mode="sparse")
    assert {h.source for h in hits} == {docs[0].doc_id} and len(hits) == len(nodes)
    assert all(docs[0].text[h.metadata["start"] : h.metadata["end"]] == h.text for h in hits)
    store.delete(docs[0].doc_id)
    assert store.pipeline.store.count() == 0
