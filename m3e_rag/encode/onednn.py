"""Faster fp32 Linear layers on CPU for the torch backend: oneDNN with pre-packed weights.

torch's CPU ``Linear`` calls MKL's sgemm, which takes its AVX2 code path on AMD CPUs and runs much slower
there than oneDNN with weights packed once (the kernel ``torch.compile`` itself uses on CPU). The arithmetic
is the same fp32; only the summation order differs. Where oneDNN is missing, or its self-test disagrees
with ``torch.nn.Linear``, nothing is changed (figures: benchmarks/README.md, 'Design figures').

Only the encoder imports this module, and only for a CPU model with ``backend="torch"``.
"""

from __future__ import annotations

import os

import torch

__all__ = ["CACHE_CAPACITY", "PackedLinear", "cap_kernel_caches", "onednn_available", "use_onednn_linears"]

#: Kernels oneDNN (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) and torch's ideep layer (``LRU_CACHE_CAPACITY``) keep
#: per cache, where the process has not set these variables itself. Each distinct input shape of a packed
#: Linear builds its own kernels and the defaults keep 1,024, so a long-lived server, which meets a shape per
#: query length and batch size, would keep growing. Most reuse is of the shape just used (an ingest's batches
#: come longest first), so a small cache loses little (figures: benchmarks/README.md, 'Design figures').
CACHE_CAPACITY = 32
_CACHE_ENV = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


class PackedLinear(torch.nn.Module):
    """An inference-only fp32 Linear whose weight is pre-packed for oneDNN (replaces the original)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
            self.register_buffer("packed_weight", packed)
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b``, like the Linear it replaced."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        """Shape, as torch.nn.Linear shows it."""
        return f"in_features={self.in_features}, out_features={self.out_features}, onednn_packed=True"


def cap_kernel_caches() -> None:
    """Set the oneDNN and ideep kernel caches to :data:`CACHE_CAPACITY` where the process has not set them.

    Both libraries read their variable once, when their first kernel is built, so this takes effect only
    when called before (the encoder calls it before packing its first model; a process that ran oneDNN
    before keeps its caches as they are). Both are capped: ideep holds on to the kernels it caches, so
    capping oneDNN's cache alone released only half of the growth.
    """
    for name in _CACHE_ENV:
        os.environ.setdefault(name, str(CACHE_CAPACITY))


def onednn_available() -> bool:
    """Whether oneDNN's packed linear exists here and agrees with torch.nn.Linear on a small input."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        lin = torch.nn.Linear(48, 24)
        x = torch.randn(2, 5, 48, generator=gen)
        with torch.no_grad():
            got = PackedLinear(lin)(x)
            return bool(torch.allclose(got, lin(x), rtol=1e-4, atol=1e-5))
    except (RuntimeError, AttributeError, TypeError, NotImplementedError):
        return False


def use_onednn_linears(model: torch.nn.Module) -> int:
    """Replace every fp32 CPU ``torch.nn.Linear`` inside ``model`` by a :class:`PackedLinear`; returns how many.

    The model is for inference from then on (no gradients flow through the packed weights).
    """
    cap_kernel_caches()
    if not onednn_available():
        return 0
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            weight = getattr(child, "weight", None)
            if type(child) is torch.nn.Linear and weight is not None and weight.dtype == torch.float32 \
                    and weight.device.type == "cpu":
                setattr(module, name, PackedLinear(child))
                _release_pages(weight)  # the original is dead from here: let its pages go now, not at the end
                swapped += 1
    return swapped


def _release_pages(tensor: torch.Tensor) -> None:
    """Tell the kernel the whole pages under a dead tensor are not needed (Linux ``MADV_DONTNEED``).

    The weights sit in transformers' map of the safetensors file, which lives as long as any tensor
    in it (the embeddings, LayerNorms and biases stay there): without this, every packed layer's
    original stays resident beside its packed copy. With it, a packed model holds as much as
    sentence-transformers' unpacked one; the word embeddings stay mapped, so only the rows of tokens
    met are resident (cheaper than copying the rest out). Only pages wholly inside the tensor's bytes
    are released, and only while the tensor is still referenced here, so no live data shares them.
    Best effort (figures: benchmarks/README.md, 'Design figures').
    """
    from m3e_rag.encode.libc import libc

    lib = libc()  # None off Linux
    if lib is None or tensor.device.type != "cpu" or tensor.is_mkldnn:
        return
    try:
        import ctypes
        import mmap

        page = mmap.PAGESIZE
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        first = (start + page - 1) // page * page
        last = end // page * page
        if last > first:
            lib.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # MADV_DONTNEED
    except (OSError, AttributeError, ValueError):
        pass
