"""How texts become forward passes: sorted by length, cut under a memory budget, tokenized ahead, heap trimmed.

Whatever the backend, the encoder runs its texts longest first, in batches bounded both in texts and in
padded tokens (so a batch's activations stay small enough to be reused from the heap), and hands the C
heap's free pages back to the kernel as padded tokens add up. The backend itself is two callables: one
tokenizes a batch, one runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from m3e_rag.encode.inputs import _check_overflow
from m3e_rag.encode.torch_backend import ONEDNN_AFTER_TOKENS, _hf_config, _pack_for_onednn

if TYPE_CHECKING:
    from m3e_rag.encode.cache import SentenceModel, _LoadedModel

__all__ = ["MAX_BATCH_ACTIVATION_BYTES", "TOKENIZE_AHEAD", "TRIM_EVERY_PADDED_TOKENS"]

#: Upper bound on the largest activation of one forward pass (batch x padded length x feed-forward
#: width x 4 bytes), with a floor of 512 tokens so one full-window text always fits. Under glibc's mmap
#: threshold, so activations are reused from the heap instead of being mapped, page-faulted and zeroed
#: anew by every layer. 6 MiB is 512 tokens on m3e-base: a forward pass's transient memory grows with its
#: tokens, while CPU throughput does not (figures: benchmarks/README.md, 'Design figures').
MAX_BATCH_ACTIVATION_BYTES = 6 * 2**20
#: The C heap's free pages go back to the kernel (:func:`_trim_heap`) after each batch that brings the padded
#: tokens run since the last trim to at least this many: after nearly every batch of an ingest, after every
#: dozen or so short queries. Counting per batch instead (trim after batches of >= 512 tokens) stopped trimming
#: once batches were cut at 512 tokens (most are a little shorter): the heap then kept what varied shapes
#: freed, and an ingest peaked higher at the same speed (figures: benchmarks/README.md, 'Design figures').
TRIM_EVERY_PADDED_TOKENS = 256
#: Tokenize the next batch on a helper thread while the model runs the current one. None: on CUDA only,
#: where the CPU is otherwise idle during a forward pass; on CPU the forward pass already uses every core
#: and a batch's tokenization is tiny against it (figures: benchmarks/README.md, 'Design figures').
TOKENIZE_AHEAD: bool | None = None


def _max_batch_tokens(st: SentenceModel) -> int:
    """Padded tokens per forward pass that keep the widest activation under MAX_BATCH_ACTIVATION_BYTES."""
    config = _hf_config(st)
    width = int(getattr(config, "intermediate_size", 0) or 4 * int(getattr(config, "hidden_size", 768) or 768))
    return max(512, MAX_BATCH_ACTIVATION_BYTES // (4 * width))


def _batches(order: np.ndarray, lengths: np.ndarray, max_texts: int, max_tokens: int) -> list[np.ndarray]:
    """Cut ``order`` (indices by decreasing length) into batches of <= ``max_texts`` texts and <= ``max_tokens``.

    Tokens are counted padded: the first (longest) text of a batch sets its length.
    """
    out: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_texts, max_tokens // longest))
        out.append(order[start : start + size])
        start += size
    return out


def _trim_heap() -> None:
    """Give the C heap's free pages back to the kernel between batches (glibc ``malloc_trim``; else nothing).

    Batches of different shapes free activations of different sizes and glibc keeps them, which raises an
    ingest's peak memory. Trimming once per batch (not per layer: the layers of one batch reuse the same
    sizes) costs little against a forward pass; short queries trim once per :data:`TRIM_EVERY_PADDED_TOKENS`
    padded tokens, not once each (figures: benchmarks/README.md, 'Design figures').
    """
    from m3e_rag.encode.libc import libc

    trim = getattr(libc(), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def _progress(batches: Any, show: bool, total: int) -> Any:
    """Batches, wrapped in a tqdm bar when ``show`` is set (``show_progress=True``)."""
    if not show:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc="Encoding", unit="batch", total=total)


def _prepared_batches(
    batches: list[np.ndarray], prepare: Any, *, ahead: bool
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """``(indices, prepare(indices))`` for each batch in order.

    With ``ahead``, the next batch is prepared on a helper thread while the caller runs the current one
    (the tokenizer's Rust core runs without the GIL).
    """
    if not ahead:
        for idx in batches:
            yield idx, prepare(idx)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3e-tokenize") as pool:
        pending = pool.submit(prepare, batches[0])
        for n, idx in enumerate(batches):
            features = pending.result()
            if n + 1 < len(batches):
                pending = pool.submit(prepare, batches[n + 1])
            yield idx, features


def _capped_lengths(model: _LoadedModel, lengths: Sequence[int], on_overflow: str) -> np.ndarray:
    """Token counts capped at the window, after the overflow policy's check; packs oneDNN once it pays.

    The caller holds the model's lock: this is the start of every encode (dense, or with a model's heads).
    """
    counts = np.asarray(lengths, dtype=np.int64)
    _check_overflow(counts, model, on_overflow)
    capped = np.minimum(counts, model.max_seq_length)
    if model.onednn_pending and model.stats.tokens + int(capped.sum()) >= ONEDNN_AFTER_TOKENS:
        _pack_for_onednn(model)
    return capped


def _encode_batches(
    model: _LoadedModel,
    capped: np.ndarray,
    batch_size: int,
    prepare: Callable[[np.ndarray], dict[str, Any]],
    forward: Callable[[dict[str, Any]], np.ndarray],
    show_progress: bool,
) -> np.ndarray:
    """Float32 vectors of the texts whose token counts (capped at the window) are ``capped``, in their order.

    ``prepare(indices)`` tokenizes the texts of one batch and ``forward(features)`` runs it; the caller
    holds the model's lock. Padded tokens are counted in ``model.stats`` and for the heap trims.
    """
    order = np.argsort(-capped, kind="stable")
    out = np.empty((len(capped), model.dim), dtype=np.float32)
    batches = _batches(order, capped, batch_size, model.max_batch_tokens)
    ahead = model.st.device.type == "cuda" if TOKENIZE_AHEAD is None else TOKENIZE_AHEAD
    prepared = _prepared_batches(batches, prepare, ahead=ahead and len(batches) > 1)
    for idx, features in _progress(prepared, show_progress and len(batches) > 0, len(batches)):
        out[idx] = forward(features)
        ids = features.get("input_ids")
        padded = (int(ids.shape[-1]) if ids is not None else int(capped[idx].max())) * len(idx)
        model.stats.padded_tokens += padded
        model.untrimmed_tokens += padded
        if model.untrimmed_tokens >= TRIM_EVERY_PADDED_TOKENS:
            _trim_heap()
            model.untrimmed_tokens = 0
    return out
