"""m3e-rag's Chinese-aware chunker as a LlamaIndex node parser.

``M3ENodeParser`` splits documents with :class:`m3e_rag.ingest.chunking.Chunker`: sentence ends
(。！？；… and line breaks), whole-sentence overlap, and a budget counted in the embedding model's
own tokens, so every node fits the model's window *including* the metadata text LlamaIndex
prepends when it embeds a node (``MetadataMode.EMBED``) and the model's document prompt. Node
spans (``start_char_idx`` / ``end_char_idx``) are the chunker's exact offsets:
``document.text[start:end] == node.text``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llama_index.core.node_parser.interface import NodeParser
from llama_index.core.schema import BaseNode, Document, MetadataMode, NodeRelationship, TextNode
from llama_index.core.utils import get_tqdm_iterable
from pydantic import Field, PrivateAttr

from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.errors import InputError, refuse_unknown
from m3e_rag.ingest.chunking import Chunker
from m3e_rag.pipeline import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS

__all__ = ["M3ENodeParser"]

logger = logging.getLogger(__name__)

_MIN_TOKENS = 8
_MAX_TOKENS = 510
#: LlamaIndex splitter names -> ours (both accepted; both count tokens).
_ALIASES = {"chunk_size": "chunk_tokens", "chunk_overlap": "overlap_tokens"}
_REFUSED = {
    "tokenizer": "the budget is counted with the embedding model's own tokenizer; pass model_name= or embed_model=",
    "separator": "the chunker cuts at sentence ends (。！？；… . ! ?) and line breaks, then clauses, then tokens",
    "paragraph_separator": "the chunker cuts at line breaks and sentence ends on its own",
    "secondary_chunking_regex": "the chunker cuts at sentence ends, then clauses, then tokens",
    "chunking_tokenizer_fn": "the chunker's sentence rules are Chinese- and English-aware already",
}


class M3ENodeParser(NodeParser):
    """Split documents into nodes budgeted in the embedding model's tokens (Chinese-aware).

    Args:
        model_name: the model whose tokenizer counts the budget (default ``$M3E_MODEL``, as M3EEmbedding).
        embed_model: an ``M3EEmbedding`` to share (its model and document prompt); instead of model_name.
        chunk_tokens: most tokens per node, the metadata text LlamaIndex embeds with it included (like
            ``SentenceSplitter``'s ``chunk_size``, also accepted); at most the model's window minus its
            special tokens and document prompt.
        overlap_tokens: most tokens of whole sentences repeated at the start of the next node
            (``chunk_overlap`` also accepted); default 32, or less than half of a small chunk_tokens;
            lowered to fit when metadata shrinks the budget.
        include_metadata, include_prev_next_rel, id_func, callback_manager: as every LlamaIndex node parser.

    Example:
        .. code-block:: python

            from llama_index.core.ingestion import IngestionPipeline
            from llama_index.embeddings.m3e import M3EEmbedding
            from llama_index.node_parser.m3e import M3ENodeParser

            embed = M3EEmbedding(model_name="m3e-base")
            pipeline = IngestionPipeline(transformations=[M3ENodeParser(embed_model=embed, chunk_tokens=256), embed])
            nodes = pipeline.run(documents=docs)
    """

    model_name: str | None = Field(default=None, description="Model whose tokenizer counts the budget.")
    chunk_tokens: int = Field(default=DEFAULT_CHUNK_TOKENS, ge=_MIN_TOKENS, le=_MAX_TOKENS,
                              description="Most model tokens per node (embedded metadata included).")
    overlap_tokens: int = Field(default=DEFAULT_OVERLAP_TOKENS, ge=0, description="Overlap in tokens.")

    _encoder: M3EEncoder = PrivateAttr()
    _chunkers: dict[int, Chunker] = PrivateAttr(default_factory=dict)

    def __init__(self, **kwargs: Any) -> None:
        accepted = set(type(self).model_fields) | set(_ALIASES) | {"embed_model"}
        refuse_unknown("M3ENodeParser()", kwargs, accepted, _REFUSED)
        for theirs, ours in _ALIASES.items():
            if theirs in kwargs:
                if ours in kwargs and kwargs[ours] != kwargs[theirs]:
                    raise InputError(f"M3ENodeParser got {theirs}= and {ours}=; they are the same setting, give one.")
                kwargs[ours] = kwargs.pop(theirs)
        embed_model = kwargs.pop("embed_model", None)
        encoder: M3EEncoder | None = None
        if embed_model is not None:
            encoder = getattr(embed_model, "encoder", None)
            if not isinstance(encoder, M3EEncoder):
                raise InputError(f"embed_model must be an M3EEmbedding, got {type(embed_model).__name__}.")
            if kwargs.get("model_name") not in (None, encoder.model_name):
                raise InputError("M3ENodeParser got model_name= and an embed_model of another model; give one.")
            kwargs["model_name"] = encoder.model_name
        chunk = kwargs.get("chunk_tokens", DEFAULT_CHUNK_TOKENS)
        if "overlap_tokens" not in kwargs and isinstance(chunk, int):  # the default overlap shrinks with small chunks
            kwargs["overlap_tokens"] = max(0, min(DEFAULT_OVERLAP_TOKENS, (chunk - 1) // 2))
        overlap = kwargs.get("overlap_tokens")
        if isinstance(chunk, int) and not _MIN_TOKENS <= chunk <= _MAX_TOKENS:
            raise InputError(
                f"chunk_tokens (chunk_size) must be {_MIN_TOKENS} to {_MAX_TOKENS} model tokens: M3E reads 512 tokens "
                f"including [CLS] and [SEP]; got {chunk}."
            )
        if isinstance(chunk, int) and isinstance(overlap, int) and not 0 <= overlap < chunk / 2:
            raise InputError(f"overlap_tokens (chunk_overlap) must be 0 <= overlap < chunk_tokens / 2; got {overlap}.")
        super().__init__(**kwargs)
        self._encoder = encoder or M3EEncoder(self.model_name)

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialization."""
        return "M3ENodeParser"

    @property
    def encoder(self) -> M3EEncoder:
        """The encoder whose tokenizer counts the budget."""
        return self._encoder

    def _room(self) -> int:
        """Tokens of text the model can read besides [CLS], [SEP] and its document prompt."""
        enc = self._encoder
        prompt = enc.count_tokens([enc.document_prompt])[0] - 2 if enc.document_prompt else 0
        return enc.max_seq_length - 2 - max(0, prompt)

    def _chunker(self, budget: int) -> Chunker:
        chunker = self._chunkers.get(budget)
        if chunker is None:
            overlap = min(self.overlap_tokens, (budget - 1) // 2)
            chunker = Chunker(self._encoder.tokenizer, max_tokens=budget, overlap_tokens=overlap)
            self._chunkers[budget] = chunker
        return chunker

    def _budget(self, node: BaseNode) -> int:
        room = self._room()
        if self.chunk_tokens > room:
            raise InputError(
                f"chunk_tokens={self.chunk_tokens} exceeds the {room} tokens {self._encoder.model_name!r} can read "
                "besides its special tokens and document prompt; lower chunk_tokens."
            )
        budget = self.chunk_tokens
        if self.include_metadata:
            probe = TextNode(
                text="",
                metadata=node.metadata,
                excluded_embed_metadata_keys=node.excluded_embed_metadata_keys,
                metadata_template=node.metadata_template,
                metadata_separator=node.metadata_separator,
                text_template=getattr(node, "text_template", TextNode.model_fields["text_template"].default),
            )
            prefix = probe.get_content(metadata_mode=MetadataMode.EMBED)
            used = self._encoder.count_tokens([prefix])[0] - 2 if prefix.strip() else 0
            budget = min(budget, room) - used
            if budget < _MIN_TOKENS:
                raise InputError(
                    f"Node {node.node_id!r}'s metadata takes {used} of the model's {room} tokens when embedded, "
                    "leaving no room for text; list long keys in excluded_embed_metadata_keys or pass "
                    "include_metadata=False."
                )
        return budget

    def get_nodes_from_documents(
        self, documents: Sequence[Document], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        """Split documents into nodes (``show_progress``: a progress bar; other keywords are refused)."""
        refuse_unknown("M3ENodeParser.get_nodes_from_documents()", kwargs, ["show_progress"])
        return super().get_nodes_from_documents(documents, show_progress=show_progress)

    async def aget_nodes_from_documents(
        self, documents: Sequence[Document], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        """Async :meth:`get_nodes_from_documents`."""
        refuse_unknown("M3ENodeParser.aget_nodes_from_documents()", kwargs, ["show_progress"])
        return await super().aget_nodes_from_documents(documents, show_progress=show_progress)

    def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> list[BaseNode]:
        out: list[BaseNode] = []
        for node in get_tqdm_iterable(nodes, show_progress, "Splitting with the M3E chunker"):
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            chunks = self._chunker(self._budget(node)).split_text(text)
            for i, chunk in enumerate(chunks):
                out.append(
                    TextNode(
                        id_=self.id_func(i, node),
                        text=chunk.text,
                        metadata=dict(node.metadata) if self.include_metadata else {},
                        excluded_embed_metadata_keys=list(node.excluded_embed_metadata_keys),
                        excluded_llm_metadata_keys=list(node.excluded_llm_metadata_keys),
                        metadata_separator=node.metadata_separator,
                        metadata_template=node.metadata_template,
                        text_template=getattr(node, "text_template", TextNode.model_fields["text_template"].default),
                        relationships={NodeRelationship.SOURCE: node.as_related_node_info()},
                        start_char_idx=chunk.start,
                        end_char_idx=chunk.end,
                    )
                )
        return out

    def _postprocess_parsed_nodes(self, nodes: list[BaseNode], parent_doc_map: dict[str, Document]) -> list[BaseNode]:
        # LlamaIndex re-derives spans with str.find(), which picks the wrong place for repeated text; keep ours.
        spans = {n.node_id: (n.start_char_idx, n.end_char_idx) for n in nodes if isinstance(n, TextNode)}
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for n in nodes:
            if isinstance(n, TextNode) and n.node_id in spans:
                n.start_char_idx, n.end_char_idx = spans[n.node_id]
        return nodes
