"""The servers `benchmarks/serve.py` drives: how each is installed, prepared and started.

- ``m3e-rag``: ``m3e-rag serve`` with its defaults (``--backend torch``); ``m3e-rag-int8``: ``--backend
  onnx-int8``; ``m3e-rag-int8-fast``: ``--backend onnx-int8-fast``; ``m3e-rag-before``: the same command run
  from an older checkout (``--baseline-tree``).
- ``infinity``: infinity-emb v2 with its defaults (torch engine, its batch size 32).
- ``infinity-onnx-int8``: what infinity recommends on CPU: ``--engine optimum`` over an ONNX file, and on
  CPU it prefers a quantized one (``*quantize*.onnx``) when the folder has it, as Xenova's repositories do.
  The folder is made here the way optimum documents it: ``optimum-cli export onnx`` (fp32 ``model.onnx``),
  ``optimum-cli onnxruntime quantize --avx512_vnni`` on it (dynamic int8, ``model_quantized.onnx``), then ONNX
  Runtime's transformer fusions on the fp32 file.
- ``infinity-onnx``: the same engine on the fp32 ``model.onnx`` (``--onnx-do-not-prefer-quantized``).
- ``naive``: ``benchmarks/_naive_server.py`` (FastAPI + ``SentenceTransformer.encode`` per request).

infinity-emb is installed by this module into its own venv ``benchmarks/.venv-infinity`` (torch 2.13.0
CPU wheel first), never a dependency of m3e-rag. Every server is started with every CPU allowed, whatever
the load generator's own pinning (:func:`all_cpus`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
INFINITY_VENV = REPO / "benchmarks" / ".venv-infinity"
INFINITY_SPEC = "infinity-emb[server,torch,optimum]==0.0.78"
INFINITY_PINS = ("optimum[onnxruntime]>=2", "numpy<2", "pandas<3", "pyarrow==21.0.0")
ONNX_CACHE = REPO / "benchmarks" / ".cache" / "infinity-onnx"
M3E_RAG_KINDS = ("m3e-rag", "m3e-rag-int8", "m3e-rag-int8-fast", "m3e-rag-before")
#: The backend each m3e-rag kind serves with.
M3E_RAG_BACKENDS = {"m3e-rag-int8": "onnx-int8", "m3e-rag-int8-fast": "onnx-int8-fast"}
INFINITY_KINDS = ("infinity", "infinity-onnx", "infinity-onnx-int8")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def all_cpus() -> None:
    """preexec_fn of every server: allow every CPU (the load generator pins itself before starting them)."""
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def ensure_infinity() -> tuple[Path | None, str | None]:
    """The infinity_emb executable (installing it into its own venv if needed), or None and why not.

    Pins beside the spec: infinity-emb requires numpy < 2, which pandas 3 and pyarrow 22+ do not accept. optimum
    resolves to 2.x, as for any user today: its ONNX engine then runs, but infinity's own graph optimisation call
    fails (``OptimizationConfig`` lost an argument in optimum 2; infinity logs it and runs the graph as given, so
    :func:`infinity_onnx_folder` hands it a graph already optimised), and the torch engine runs without
    BetterTransformer (removed in optimum 2). optimum 1.x cannot import its ONNX side on torch 2.13.
    """
    exe = INFINITY_VENV / "bin" / "infinity_emb"
    stamp = INFINITY_VENV / ".m3e-rag-bench-spec"
    wanted = " ".join([INFINITY_SPEC, *INFINITY_PINS])
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return exe, None
    pip = str(INFINITY_VENV / "bin" / "pip")
    steps = [
        [sys.executable, "-m", "venv", str(INFINITY_VENV)],
        [pip, "install", "torch==2.13.0"],  # the CPU wheel, before anything pulls CUDA
        [pip, "install", INFINITY_SPEC, *INFINITY_PINS],
    ]
    for step in steps[0 if not (INFINITY_VENV / "bin" / "pip").exists() else 1:]:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            return None, f"`{' '.join(step)}` failed: {proc.stderr.strip()[-600:]}"
    if not exe.exists():
        return None, "infinity-emb installed but has no infinity_emb command"
    stamp.write_text(wanted)
    return exe, None


def infinity_versions() -> dict[str, str]:
    """Versions of what infinity-emb runs on, read from its venv (recorded with every result)."""
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in ('infinity-emb', "
            "'torch', 'transformers', 'sentence-transformers', 'optimum', 'onnxruntime', 'numpy')}))")
    proc = subprocess.run([str(INFINITY_VENV / "bin" / "python"), "-c", code], capture_output=True, text=True)
    return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {"error": proc.stderr[-300:]}


def infinity_onnx_folder(model_dir: Path) -> Path:
    """A copy of ``model_dir`` with ``model.onnx`` and ``model_quantized.onnx`` made by optimum-cli (cached)."""
    out = ONNX_CACHE / model_dir.name
    if (out / "model_quantized.onnx").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cli = str(INFINITY_VENV / "bin" / "optimum-cli")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run([cli, "export", "onnx", "--model", str(model_dir), "--task", "feature-extraction",
                    "--library-name", "transformers", str(tmp)], check=True, capture_output=True, env=env, timeout=1800)
    subprocess.run([cli, "onnxruntime", "quantize", "--avx512_vnni", "--onnx_model", str(tmp), "-o",
                    str(tmp / "quantized")], check=True, capture_output=True, env=env, timeout=1800)
    # then ONNX Runtime's transformer fusions (attention, skip-layernorm, bias-gelu) on the fp32 file, what
    # optimum's -O2 applies (the quantizer cannot read a fused graph: it quantizes the plain export, and
    # ONNX Runtime fuses what it can of it when the session starts)
    optimise = ("from onnxruntime.transformers.optimizer import optimize_model as o; import sys; "
                "o(sys.argv[1], model_type='bert').save_model_to_file(sys.argv[1])")
    subprocess.run([str(INFINITY_VENV / "bin" / "python"), "-c", optimise, str(tmp / "model.onnx")], check=True,
                   capture_output=True, env=env, timeout=1800)
    quantized = next((tmp / "quantized").glob("*.onnx"))
    quantized.rename(tmp / "model_quantized.onnx")
    shutil.rmtree(tmp / "quantized")
    for extra in ("modules.json", "config_sentence_transformers.json", "1_Pooling"):  # the pooling infinity reads
        src = model_dir / extra
        if src.is_dir():
            shutil.copytree(src, tmp / extra, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, tmp / extra)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _pooling(model_dir: Path) -> str:
    """``mean`` or ``cls``: the pooling the model folder's 1_Pooling/config.json names."""
    config = json.loads((model_dir / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    return "cls" if config.get("pooling_mode_cls_token") else "mean"


class Server:
    """One server subprocess on 127.0.0.1, stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1/embeddings"
        self.health = f"http://127.0.0.1:{port}/health"
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                     preexec_fn=all_cpus)  # noqa: PLW1509 - no threads started yet

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds until /health answered 200 (RuntimeError with the log's tail if it died or never did)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log.read_text()[-1500:]}")
            try:
                if httpx.get(self.health, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} was not ready after {timeout} s: {self.log.read_text()[-1500:]}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


def start_server(kind: str, model_dir: Path, infinity: Path | None, logs: Path, *, extra: list[str] | None = None,
                 baseline_tree: Path | None = None) -> Server:
    """Start one server of ``kind`` on a free port over ``model_dir`` (see the module docstring)."""
    port = free_port()
    log = logs / f"{kind}-{model_dir.name}.log"
    if kind.startswith("m3e-rag"):
        backend = M3E_RAG_BACKENDS.get(kind, "torch")
        argv = [sys.executable, "-m", "m3e_rag", "serve", "--model", str(model_dir), "--port", str(port),
                "--backend", backend, "--served-model-name", "bench", *(extra or [])]
        if kind == "m3e-rag-before":
            if baseline_tree is None:
                raise ValueError("m3e-rag-before needs --baseline-tree")
            # `python -m` puts the working directory first on sys.path: run from the older tree
            return Server(kind, argv, port, log, cwd=baseline_tree, env={"PYTHONPATH": str(baseline_tree)})
        return Server(kind, argv, port, log, cwd=REPO)
    if kind == "naive":
        argv = [sys.executable, str(REPO / "benchmarks" / "_naive_server.py"), str(model_dir), str(port)]
        return Server(kind, argv, port, log)
    if kind not in INFINITY_KINDS:
        raise ValueError(f"unknown server {kind!r}")
    assert infinity is not None
    argv = [str(infinity), "v2", "--served-model-name", "bench", "--port", str(port), "--host", "127.0.0.1",
            "--device", "cpu", "--url-prefix", "/v1", "--log-level", "warning"]
    if kind == "infinity":
        argv += ["--model-id", str(model_dir), "--engine", "torch"]
        return Server(kind, argv, port, log)
    # infinity names the ONNX file by the path its folder listing gives, and optimum wants a name relative to the
    # model: so the model is "." from inside its folder. Each variant keeps its optimized copy in its own cache.
    folder = infinity_onnx_folder(model_dir)
    # its optimum engine pools the CLS token unless told otherwise ("auto" is not read from 1_Pooling): the model's
    # own pooling is passed, as a user would who checked the vectors (without it: cosine 0.79 to the model's own)
    argv += ["--model-id", ".", "--engine", "optimum", "--pooling-method", _pooling(model_dir)]
    if kind == "infinity-onnx":
        argv.append("--onnx-do-not-prefer-quantized")
    return Server(kind, argv, port, log, cwd=folder, env={"HF_HOME": str(ONNX_CACHE / f"hf-home-{kind}")})
