"""ONNX Runtime backends (``backend="onnx"``, ``"onnx-int8"`` and ``"onnx-int8-fast"``) for :class:`M3EEncoder`.

Only the Hugging Face transformer (token ids in, ``last_hidden_state`` out) runs in ONNX Runtime. Every
sentence-transformers module after it (Pooling, Dense, Normalize...) still runs in torch on its output,
so pooling settings stay exactly those of the model folder.

The exported graph is cached on disk and reused by every later process:

* ``<model folder>/onnx/m3e-rag-<fp32|int8>-<key>.onnx`` when the model folder is writable,
* else ``$M3E_RAG_CACHE`` (default ``~/.cache/m3e-rag``) ``/onnx/<hash of the model path>/``.

The key hashes the weight files' names, sizes and modification times, ``config.json``, the torch,
onnx and onnxruntime versions and :data:`EXPORT_VERSION`, so changed weights or tools give a new
export. Files are written to a temporary name and renamed into place under an inter-process file
lock: two processes never export the same file at once, and a second process simply loads it.

``onnx-int8`` is ONNX Runtime's dynamic quantization of the fp32 export: int8 weights (symmetric, one
scale per output channel) and uint8 activations (one scale per tensor, computed on every call) for the
Q, K, V, attention-output and FFN-input MatMuls. The FFN-output MatMul stays fp32: its input, the GELU
output, has outlier channels that a per-tensor activation scale flattens; keeping it fp32 brings the
vectors and the search results closer to fp32's for a part of the int8 speed (figures:
benchmarks/README.md, 'Design figures'). Embeddings, LayerNorm, softmax and
GELU stay fp32.

``onnx-int8-fast`` quantizes the FFN-output MatMul too (every MatMul with a constant weight): on the
service's short texts it gives about 1.4-1.6x ``onnx-int8``'s texts/s, for vectors further from fp32's
(figures: the README's throughput table; benchmarks/README.md). SmoothQuant-style channel smoothing of the GELU output
before that MatMul was tried and did not recover the fidelity on both real models here, so it is not used.
``reduce_range`` (7-bit weights) is used only on x86 CPUs without VNNI (or where
that cannot be read), where 8-bit products can saturate.

After the ONNX session is built, the torch copy of the transformer's weights is released: the
sentence-transformers object is kept only for its tokenizer and the modules after the transformer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3e_rag.errors import MissingExtraError, ModelLoadError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

__all__ = [
    "EXPORT_VERSION",
    "OnnxRunner",
    "build_onnx_runner",
    "cpu_has_vnni",
    "onnx_cache_dir",
    "default_intra_op_threads",
]

logger = logging.getLogger(__name__)

#: Bump whenever the exported graph or the quantization recipe changes: older cache files are then ignored.
EXPORT_VERSION = 1
#: Opset of the exported graph.
OPSET = 17
#: Token inputs the exported transformer may take, in this order.
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _require_onnxruntime(backend: str) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx", f"backend={backend!r}") from exc
    return onnxruntime


def _require_onnx(backend: str) -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise MissingExtraError("onnx", "onnx", f"Exporting the model for backend={backend!r}") from exc
    return onnx


def cpu_has_vnni() -> bool | None:
    """Whether the CPU has VNNI int8 dot products (AVX512-VNNI or AVX-VNNI); None when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        return None
    return None


def _needs_reduce_range() -> bool:
    """7-bit weights on x86 CPUs without (or not known to have) VNNI, where u8 x s8 products can saturate."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    return x86 and cpu_has_vnni() is not True


def default_intra_op_threads() -> int:
    """Threads for ONNX Runtime: torch's own intra-op thread count (physical cores unless the user set it)."""
    import torch

    return max(1, torch.get_num_threads())


# ---------------------------------------------------------------------------------------------------- cache


def _transformer_dir(path: Path) -> Path:
    """Folder of the first (Transformer) module, from ``modules.json``; the model folder itself usually."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        sub = str(modules[0].get("path") or "")
    except (OSError, ValueError, IndexError, AttributeError, KeyError):
        sub = ""
    return path / sub if sub else path


def _fingerprint(path: Path, extra: dict[str, Any]) -> str:
    """Hash of what decides the exported graph: weight files (name, size, mtime), config, tool versions."""
    import onnxruntime
    import torch

    try:
        import onnx

        onnx_version = onnx.__version__
    except ImportError:  # loading a cached export does not need onnx; the key must still match
        onnx_version = _dist_version("onnx")
    tdir = _transformer_dir(path)
    files = []
    for item in sorted(tdir.iterdir()):
        if item.is_file() and item.name.endswith(_WEIGHT_SUFFIXES):
            st = item.stat()
            files.append([item.name, st.st_size, st.st_mtime_ns])
    config = tdir / "config.json"
    data = {
        "export_version": EXPORT_VERSION,
        "opset": OPSET,
        "weights": files,
        "config": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "torch": torch.__version__,
        "onnx": onnx_version,
        "onnxruntime": onnxruntime.__version__,
        **extra,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _dist_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _user_cache_root() -> Path:
    env = os.environ.get("M3E_RAG_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "m3e-rag"


def onnx_cache_dir(model_path: Path) -> Path:
    """Where exports of the model at ``model_path`` are kept: beside it if writable, else the user cache."""
    model_path = Path(model_path).resolve()
    beside = model_path / "onnx"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    digest = hashlib.sha256(str(model_path).encode()).hexdigest()[:16]
    fallback = _user_cache_root() / "onnx" / digest
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _cached_file(target: Path, produce: Callable[[Path], None], what: str) -> bool:
    """Make ``target`` exist: produce it into a temp file and rename, under a lock. True if produced here."""
    from filelock import FileLock

    if target.is_file():
        return False
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if target.is_file():  # another process made it while we waited
            return False
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp.onnx", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        started = time.perf_counter()
        try:
            produce(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("%s %s in %.1f s", what, target, time.perf_counter() - started)
        return True


# --------------------------------------------------------------------------------------------------- export


def _token_inputs(st: SentenceTransformer) -> list[str]:
    """The token inputs this model's tokenizer produces and its transformer accepts."""
    sample = st.preprocess(["a"])
    return [name for name in _TOKEN_INPUTS if name in sample]


def _hf_model(st: SentenceTransformer) -> torch.nn.Module:
    """The Hugging Face model inside the first module, or an error saying why ONNX cannot run this model."""
    first = st[0]
    hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
    modality = getattr(first, "modality_config", {}).get("text", {}) if hasattr(first, "modality_config") else {}
    method = modality.get("method", "forward")
    output = modality.get("method_output_name", "last_hidden_state")
    if hf is None or method != "forward" or output not in ("last_hidden_state", ("last_hidden_state",)):
        raise ModelLoadError(
            f"The ONNX backends support sentence-transformers models whose first module is a Hugging Face "
            f"encoder returning last_hidden_state; this model's first module is {type(first).__name__} "
            f"(method {method!r}, output {output!r}). Use backend='torch'."
        )
    return hf


def _export_fp32(hf: torch.nn.Module, names: Sequence[str], target: Path) -> None:
    """Trace the transformer (token inputs -> last_hidden_state) into an fp32 ONNX file."""
    import torch

    class _Transformer(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True)), return_dict=True).last_hidden_state

    # Two sequences of different lengths: the trace must see real padding, or a "no padding, drop the mask"
    # shortcut inside the model could be recorded into the graph.
    ids = torch.tensor([[101, 1000, 1001, 1002, 1003, 102], [101, 1004, 102, 0, 0, 0]], dtype=torch.long)
    vocab = int(getattr(getattr(hf, "config", None), "vocab_size", 2000) or 2000)
    ids = ids % max(vocab, 1)
    mask = (torch.arange(6)[None, :] < torch.tensor([[6], [3]])).long()
    sample = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    device = next(hf.parameters()).device
    was_training = hf.training
    hf.eval()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python-level branches in the masking code: they depend on shapes only
            # (checked by the tests against torch on padded and unpadded batches).
            warnings.simplefilter("ignore")
            hf.to("cpu")
            torch.onnx.export(
                _Transformer(hf),
                args,
                str(target),
                input_names=list(names),
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        hf.to(device)
        hf.train(was_training)


def _ffn_output_matmuls(model_file: Path, ff: int) -> list[str]:
    """Names of the MatMuls whose constant weight is ``[ff, hidden]``: the FFN output projections."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and len(node.input) == 2 and len(shapes.get(node.input[1], [])) == 2
        and shapes[node.input[1]][0] == ff
    ]


class _DropOrtQuantizationNotes(logging.Filter):
    """ONNX Runtime's quantizer logs advice on the root logger; keep it out of the user's logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


def _quantize_int8(source: Path, target: Path, *, ff: int | None, reduce_range: bool, every_matmul: bool) -> None:
    """Dynamic int8 quantization (see the module docstring for what is quantized and why)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_fp32 = _ffn_output_matmuls(source, ff) if ff and not every_matmul else []
    note_filter = _DropOrtQuantizationNotes()
    root = logging.getLogger()
    root.addFilter(note_filter)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep_fp32,
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(note_filter)


# --------------------------------------------------------------------------------------------------- runner


@dataclass
class OnnxRunner:
    """Run the exported transformer in ONNX Runtime, then the model's remaining modules in torch.

    Call it with the features of ``SentenceTransformer.preprocess`` (torch tensors); it returns the
    sentence embeddings as a float32 torch tensor on the CPU.

    Attributes:
        model_file: the ONNX file in use.
        quantized: whether it is an int8 model.
        exported: whether this process produced the file (False when it came from the cache).
        input_names: the token inputs fed to the graph.
        threads: ONNX Runtime intra-op threads.
    """

    session: Any
    modules: list[torch.nn.Module]
    model_file: Path
    quantized: bool
    exported: bool
    input_names: list[str]
    threads: int
    output_name: str = "token_embeddings"

    def __call__(self, features: dict[str, Any]) -> torch.Tensor:
        """Sentence embeddings (float32, CPU) for the features of ``SentenceTransformer.preprocess``."""
        import numpy as np
        import torch

        feeds = {}
        for name in self.input_names:
            value = features[name]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            feeds[name] = array.astype(np.int64, copy=False)
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        out = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        out[self.output_name] = torch.from_numpy(hidden)
        for module in self.modules:
            out = module(out)
        emb: torch.Tensor = out["sentence_embedding"]
        return emb


def _session_options(ort: Any, threads: int) -> Any:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def build_onnx_runner(
    st: SentenceTransformer,
    path: Path,
    *,
    quantize: bool = False,
    every_matmul: bool = False,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> OnnxRunner:
    """Export (once, cached) and load the ONNX model for ``st``; returns the callable runner.

    Args:
        st: the loaded sentence-transformers model (its first module is exported).
        path: the model folder (decides the cache key and where the cache lives).
        quantize: use a dynamic int8 model instead of fp32.
        every_matmul: with ``quantize``, the FFN-output MatMuls in int8 too (``onnx-int8-fast``).
        threads: ONNX Runtime intra-op threads; None uses :func:`default_intra_op_threads`.
        cache_dir: override the cache folder (tests).
    """
    backend = ("onnx-int8-fast" if every_matmul else "onnx-int8") if quantize else "onnx"
    ort = _require_onnxruntime(backend)
    hf = _hf_model(st)
    names = _token_inputs(st)
    if "input_ids" not in names or "attention_mask" not in names:
        raise ModelLoadError(f"The ONNX backends need input_ids and attention_mask from the tokenizer; got {names}.")
    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir(Path(path))
    folder.mkdir(parents=True, exist_ok=True)
    key = _fingerprint(Path(path), {"inputs": names})
    fp32_file = folder / f"m3e-rag-fp32-{key}.onnx"
    exported = False

    def export(tmp: Path) -> None:
        _require_onnx(backend)
        _export_fp32(hf, names, tmp)

    if quantize:
        reduce_range = _needs_reduce_range()
        ff = getattr(getattr(hf, "config", None), "intermediate_size", None)
        recipe = f"{key}-int8-perchannel-rr{int(reduce_range)}-ffnout-fp32-{ff}"
        if every_matmul:
            recipe = f"{key}-int8-perchannel-rr{int(reduce_range)}-every-matmul"
        model_file = folder / f"m3e-rag-int8-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.onnx"
        if not model_file.is_file():
            exported |= _cached_file(fp32_file, export, "Exported ONNX fp32 model to")

            def make_int8(tmp: Path) -> None:
                _require_onnx(backend)
                _quantize_int8(fp32_file, tmp, ff=int(ff) if ff else None, reduce_range=reduce_range,
                               every_matmul=every_matmul)

            exported |= _cached_file(model_file, make_int8, "Quantized ONNX int8 model to")
    else:
        model_file = fp32_file
        exported |= _cached_file(fp32_file, export, "Exported ONNX fp32 model to")
    if not exported:
        logger.info("Loaded cached ONNX model %s", model_file)
    n_threads = threads or default_intra_op_threads()
    providers = ["CPUExecutionProvider"]
    device = str(getattr(st, "device", "cpu"))
    if device.startswith("cuda") and not quantize and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(model_file), _session_options(ort, n_threads), providers=providers)
    modules = [module.cpu() for module in list(st.children())[1:]]
    output_name = getattr(st[0], "module_output_name", None) or "token_embeddings"
    _release_weights(hf)
    return OnnxRunner(session, modules, model_file, quantize, exported, names, n_threads, output_name)


def _release_weights(model: torch.nn.Module) -> None:
    """Free the torch copy of the transformer's weights (ONNX Runtime holds its own); devices are kept."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
