"""Causal-LM SFT (soi.gen.sft) and its per-example dynamics (soi.gen.record) on a tiny random Llama.

Token ids are checked against a hand-written byte map (not the tokenizer), the loss and the dynamics against a
plain full-logits forward pass in float64, greedy generation against a manual argmax loop.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from soi.errors import SoiError  # noqa: E402
from soi.gen.record import answer_correct, gen_table, load_generative, probe_rows, score_sequences  # noqa: E402
from soi.gen.sft import (  # noqa: E402
    IGNORE,
    GenExample,
    PromptFormat,
    collate,
    encode_examples,
    generate,
    length_grouped_batches,
    sft_loss,
    train_sft,
)
from soi.model.causal import load_causal_lm, tiny_causal_lm  # noqa: E402
from soi.store import RunMeta, load_dynamics, write_part  # noqa: E402

PAD, IM_START, IM_END = 256, 257, 258


pytestmark = pytest.mark.usefixtures("one_thread")


def byte_ids(text: str) -> list[int]:
    """Ids of the tiny byte tokenizer, by hand: GPT-2's byte->unicode map, vocabulary sorted by code point."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    rest = [b for b in range(256) if b not in printable]
    code = {b: b for b in printable} | {b: 256 + i for i, b in enumerate(rest)}
    order = {c: i for i, c in enumerate(sorted(code.values()))}
    return [order[code[b]] for b in text.encode("utf-8")]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {"chat": tiny_causal_lm(root / "chat"), "plain": tiny_causal_lm(root / "plain", chat_template=False)}


@pytest.fixture
def chat(tiny_dirs):
    return load_causal_lm(tiny_dirs["chat"], device="cpu")


@pytest.fixture
def plain(tiny_dirs):
    return load_causal_lm(tiny_dirs["plain"], device="cpu")


def rows(n: int = 12) -> list[dict]:
    return [{"id": f"ex{i}", "prompt": f"What is {i} + {i}?" + " Think." * (i % 3), "response": f"It is {2 * i}.",
             "answer": str(2 * i), "language": "en" if i % 2 else "fr", "task": "math"} for i in range(n)]


# ------------------------------------------------------------------------------------------------ formatting
def test_byte_map_matches_tokenizer(chat):
    _, tok = chat
    text = "Héllo\n wörld 你好 ~!"
    assert tok(text, add_special_tokens=False)["input_ids"] == byte_ids(text)
    assert tok.decode(byte_ids(text)) == text


def test_chat_template_masking_by_hand(chat):
    _, tok = chat
    fmt = PromptFormat(tok)
    assert fmt.chat and fmt.end_id == IM_END and fmt.stop_ids == [IM_END] and fmt.pad_id == PAD
    prompt = [IM_START, *byte_ids("user\nhi"), IM_END, *byte_ids("\n"), IM_START, *byte_ids("assistant\n")]
    response = [*byte_ids("yo"), IM_END]
    ids, n_prompt, cut = fmt.encode("hi", "yo", 512)
    assert (ids, n_prompt, cut) == (prompt + response, len(prompt), False)
    enc = encode_examples(fmt, [GenExample("a", "hi", "yo"), GenExample("b", "hello", "a longer reply")], 512)
    long_len = len(enc.ids[1])
    for side in ("right", "left"):
        batch = collate(enc, [0, 1], fmt.pad_id, padding_side=side)
        labels, mask, x = batch["labels"][0].tolist(), batch["attention_mask"][0].tolist(), batch["input_ids"][0]
        pad = long_len - len(prompt + response)
        start = 0 if side == "right" else pad
        want = [IGNORE] * long_len
        want[start + len(prompt):start + len(prompt) + len(response)] = response
        assert labels == want  # exactly the response tokens (closing <|im_end|> included) carry labels
        assert mask == ([1] * (long_len - pad) + [0] * pad if side == "right" else [0] * pad + [1] * (long_len - pad))
        assert x[start:start + len(prompt + response)].tolist() == prompt + response
        assert (x[mask.index(0) if side == "right" else 0:][: pad] == PAD).all()
        pos = batch["position_ids"][0].tolist()
        assert pos[start:start + len(prompt + response)] == list(range(len(prompt + response)))


def test_plain_format_masking(plain):
    _, tok = plain
    fmt = PromptFormat(tok)
    assert not fmt.chat and fmt.end_id == PAD  # EOS <|endoftext|>
    ids, n_prompt, _ = fmt.encode("2+2?", "4", 512)
    assert ids == byte_ids("2+2?\n\n") + byte_ids("4") + [PAD] and n_prompt == len(byte_ids("2+2?\n\n"))
    with pytest.raises(SoiError, match="no chat template"):
        PromptFormat(tok, chat_template=True)


def test_truncation_keeps_prompt_end_and_response_start(chat):
    _, tok = chat
    fmt = PromptFormat(tok)
    p, r = fmt.prompt_ids("x" * 100), fmt.response_ids("y" * 50)
    ids, n_prompt, cut = fmt.encode("x" * 100, "y" * 50, 64)
    assert cut and len(ids) == 64 and n_prompt == 32
    assert ids == p[-32:] + r[:32]


# --------------------------------------------------------------------------------------------------- loss
def manual_loss(model, batch) -> float:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits.double()
    labels = batch["labels"][:, 1:]
    z = logits[:, :-1]
    keep = labels != IGNORE
    logp = torch.log_softmax(z[keep], dim=-1)
    return float(-logp.gather(1, labels[keep].unsqueeze(1)).mean())


def test_loss_is_cross_entropy_over_response_tokens(chat):
    model, tok = chat
    fmt = PromptFormat(tok)
    enc = encode_examples(fmt, [GenExample(r["id"], r["prompt"], r["response"]) for r in rows(5)], 512)
    losses = []
    for side in ("right", "left"):
        batch = collate(enc, [0, 3, 4], fmt.pad_id, padding_side=side)
        with torch.no_grad():
            loss, n = sft_loss(model, batch)
        assert n == int(enc.n_response[[0, 3, 4]].sum())
        assert float(loss) == pytest.approx(manual_loss(model, batch), abs=1e-5)
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)  # position ids from the mask: padding side is irrelevant


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 50), min_size=1, max_size=300), bs=st.integers(1, 9), seed=st.integers(0, 99))
def test_length_grouped_batches_cover_each_example_once(lengths, bs, seed):
    lengths = np.asarray(lengths)
    batches = length_grouped_batches(lengths, bs, np.random.default_rng(seed), group_batches=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(1 <= len(b) <= bs for b in batches)
    assert sum(len(b) < bs for b in batches) <= -(-len(lengths) // (4 * bs))  # only each group's last batch
    assert all((np.diff(lengths[b]) <= 0).all() for b in batches)  # longest first inside a batch


# ---------------------------------------------------------------------------------------------- training
def test_checkpoints_history_and_store(chat, tmp_path):
    model, tok = chat
    res = train_sft(model, rows(10), tmp_path / "run", tokenizer=tok, max_steps=7, batch_size=4, lr=1e-3,
                    checkpoint_every=3, probe=3, probe_max_new_tokens=6, progress=False)
    assert [h["step"] for h in res.history] == [3, 6, 7] and res.steps == 7
    assert [h["epoch"] for h in res.history] == [1, 2, 3]  # 3 batches per epoch
    assert res.best_step == 7 and res.validation_loss == {}
    dyn = load_dynamics(tmp_path / "run")
    assert dyn.steps.tolist() == [3, 6, 7] and dyn.p_gold.shape == (10, 3)
    meta = RunMeta.load(tmp_path / "run")
    assert meta.is_generative and meta.tasks == {"math": ["incorrect", "correct"]}
    assert meta.recording_mode == "eval-pass" and meta.checkpoint_unit == "step"
    assert [h["step"] for h in meta.extra["sft_history"]] == [3, 6, 7]
    assert meta.extra["generative"]["probe"]["size"] == 3
    gen = load_generative(tmp_path / "run")
    assert np.array_equal(dyn.pred, (gen["token_acc"] >= 0.5).astype(np.int16))
    assert np.allclose(dyn.loss * gen["n_tokens"], -gen["logp"], rtol=1e-5)
    probe = load_dynamics(tmp_path / "run" / "probe")
    want = probe_rows(10, 3, 0)
    assert probe.example_ids.tolist() == [f"ex{i}" for i in want]
    assert np.array_equal(probe.p_gold, dyn.p_gold[want]) and np.array_equal(probe.loss, dyn.loss[want])


def test_table_input_and_bf16_autocast(tiny_dirs):
    from soi.gen.sft import as_examples

    table = pa.Table.from_pylist(rows(6))
    assert as_examples(table) == as_examples(rows(6))
    assert as_examples(table)[1] == GenExample("ex1", "What is 1 + 1? Think.", "It is 2.", task="math", language="en",
                                               answer="2")
    losses = {}
    for dtype in ("float32", "bfloat16"):  # the GPU code path (bf16 autocast), here on CPU
        model, tok = load_causal_lm(tiny_dirs["chat"], device="cpu")
        res = train_sft(model, table, tokenizer=tok, max_steps=1, batch_size=6, checkpoint_every=1, dtype=dtype,
                        progress=False)
        losses[dtype] = res.train_loss[0]
        assert next(res.model.parameters()).dtype == torch.float32  # float32 master weights
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)


def test_warmup_then_constant_lr(chat):
    model, tok = chat
    res = train_sft(model, rows(8), tokenizer=tok, max_steps=6, batch_size=4, lr=0.01, warmup_steps=4,
                    checkpoint_every=1, progress=False)
    assert [h["lr"] for h in res.history] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_best_checkpoint_by_validation_loss_is_restored(chat):
    model, tok = chat
    train = [{"id": f"ex{i}", "prompt": f"What is {i} + {i}?", "response": f"It is {2 * i}."} for i in range(8)]
    val = [{"id": f"v{i}", "prompt": f"Name a colour {i}", "response": "Zebra QUUX xylophone!"} for i in range(4)]
    res = train_sft(model, train, tokenizer=tok, validation=val, max_steps=12, batch_size=2, lr=0.01,
                    checkpoint_every=2, progress=False)
    steps = list(res.validation_loss)
    assert steps == [2, 4, 6, 8, 10, 12]
    best = min(res.validation_loss, key=res.validation_loss.get)
    assert res.best_step == best not in (2, 12)  # val text unlike train: its loss falls, then rises
    fmt = PromptFormat(tok)
    enc = encode_examples(fmt, [GenExample(r["id"], r["prompt"], r["response"]) for r in val], 512)
    s = score_sequences(res.model, enc, fmt.pad_id)
    restored = float(-s["logp"].astype(np.float64).sum() / s["n_tokens"].sum())
    assert restored == pytest.approx(res.validation_loss[best], rel=1e-5)


def test_reproducible_with_seed(tiny_dirs, tmp_path):
    def run(seed: int, name: str):
        model, tok = load_causal_lm(tiny_dirs["chat"], device="cpu")
        res = train_sft(model, rows(9), tmp_path / name, tokenizer=tok, max_steps=5, batch_size=3, lr=1e-2,
                        checkpoint_every=2, seed=seed, probe=2, probe_max_new_tokens=4, progress=False)
        parts = sorted((tmp_path / name / "dynamics").glob("*.parquet"))
        return res, [pq.read_table(p) for p in parts]

    a, ta = run(1, "a")
    b, tb = run(1, "b")
    c, _ = run(2, "c")
    assert a.train_loss == b.train_loss and all(x.equals(y) for x, y in zip(ta, tb, strict=True))
    assert a.train_loss != c.train_loss
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_lora_trains_adapters_only(chat):
    pytest.importorskip("peft")
    model, tok = chat
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train_sft(model, rows(6), tokenizer=tok, max_steps=3, batch_size=3, lr=1e-2, checkpoint_every=3,
                    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}, progress=False)
    merged = dict(res.model.named_parameters())
    assert set(merged) == set(before)  # merged back into a plain model
    changed = {n for n in before if not torch.equal(before[n], merged[n])}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed)
    with pytest.raises(SoiError, match="unknown field"):
        train_sft(model, rows(2), tokenizer=tok, max_steps=1, lora={"rank": 4}, progress=False)


# -------------------------------------------------------------------------------------------- generation
def manual_greedy(model, ids: list[int], stop: list[int], n: int) -> list[int]:
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax())
            if nxt in stop:
                break
            out.append(nxt)
    return out[len(ids):]


def test_generate_equals_manual_greedy_loop(chat):
    model, tok = chat
    torch.manual_seed(3)
    with torch.no_grad():  # sharpen the random model so that argmax ties are impossible and EOS can occur
        model.lm_head.weight.mul_(8)
    prompts = ["Hi", "What is the capital of France?", "2+2=", "Ünïcödé 你好"]
    fmt = PromptFormat(tok)
    got = generate(model, tok, prompts, max_new_tokens=12, batch_size=3)
    assert got == generate(model, tok, prompts, max_new_tokens=12, batch_size=2)  # deterministic, any batching
    for p, text in zip(prompts, got, strict=True):
        toks = manual_greedy(model, fmt.prompt_ids(p), fmt.stop_ids, 12)
        assert text == tok.decode(toks, skip_special_tokens=True).strip()


# ---------------------------------------------------------------------------------------------- dynamics
def test_dynamics_equal_manual_computation(chat, monkeypatch):
    model, tok = chat
    fmt = PromptFormat(tok)
    exs = [GenExample("a", "Add 1 and 2.", "3"),
           GenExample("b", "Say hello in French.", "Bonjour tout le monde, comment allez-vous ?")]
    enc = encode_examples(fmt, exs, 512)
    got = score_sequences(model, enc, fmt.pad_id, batch_size=2)
    import soi.gen.record as rec

    monkeypatch.setattr(rec, "_CHUNK_LOGITS", 1)  # 16-token logit chunks: the same numbers
    chunked = score_sequences(model, enc, fmt.pad_id, batch_size=2)
    assert all(np.allclose(chunked[k], got[k], rtol=1e-6) for k in got)
    for i, ids in enumerate(enc.ids):
        with torch.no_grad():
            z = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
        n_p = int(enc.n_prompt[i])
        y = np.asarray(ids[n_p:])
        zr = z[n_p - 1:len(ids) - 1]  # positions predicting the response tokens
        logp = zr - zr.max(1, keepdims=True) - np.log(np.exp(zr - zr.max(1, keepdims=True)).sum(1, keepdims=True))
        lp = logp[np.arange(len(y)), y]
        other = zr.copy()
        other[np.arange(len(y)), y] = -np.inf
        want = {"p_gold": np.exp(lp).mean(), "loss": -lp.mean(), "logp": lp.sum(),
                "margin": (zr[np.arange(len(y)), y] - other.max(1)).mean(),
                "token_acc": (zr.argmax(1) == y).mean(), "n_tokens": len(y)}
        for k, v in want.items():
            assert got[k][i] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def test_recorded_parts_equal_final_model_scores(chat, tmp_path):
    model, tok = chat
    res = train_sft(model, rows(4), tmp_path / "run", tokenizer=tok, max_steps=2, batch_size=2, lr=1e-2,
                    checkpoint_every=2, probe=2, probe_max_new_tokens=5, progress=False)
    fmt = PromptFormat(tok)
    enc = encode_examples(fmt, [GenExample(r["id"], r["prompt"], r["response"]) for r in rows(4)], 512)
    s = score_sequences(res.model, enc, fmt.pad_id)
    dyn = load_dynamics(tmp_path / "run")
    assert np.allclose(dyn.p_gold[:, -1], s["p_gold"], atol=1e-6) and np.allclose(dyn.loss[:, -1], s["loss"])
    part = pq.read_table(tmp_path / "run" / "probe" / "dynamics" / "ckpt-000000.rank-0000.parquet")
    probe_ex = [GenExample(r["id"], r["prompt"], r["response"], answer=r["answer"]) for r in rows(4)]
    probe_ex = [probe_ex[i] for i in probe_rows(4, 2, 0)]
    texts = generate(res.model, tok, [e.prompt for e in probe_ex], max_new_tokens=5)
    assert part["generation"].to_pylist() == texts
    assert part["pred"].to_pylist() == answer_correct(texts, probe_ex).astype(int).tolist()


def test_answer_correct_by_hand():
    exs = [GenExample("a", "q", "r", answer="1234"), GenExample("b", "q", "r", answer="5"),
           GenExample("c", "q", "the cat sat on the mat"), GenExample("d", "q", "the cat sat on the mat")]
    got = answer_correct(["So the answer is 1,234.", "#### 6", "the cat sat on a mat", "dogs bark"], exs)
    assert got.tolist() == [True, False, True, False]  # ROUGE-L F of case c = 5/6


def test_probe_rows():
    assert probe_rows(10, None, 0).size == 0 and probe_rows(10, 0, 0).size == 0
    assert probe_rows(10, 0.5, 0).size == 5 and probe_rows(10, 1.0, 0).tolist() == list(range(10))
    assert probe_rows(10, 30, 0).size == 10
    a = probe_rows(100, 7, 3)
    assert a.tolist() == sorted(a.tolist()) and np.array_equal(a, probe_rows(100, 7, 3))
    for bad in (-1, 1.5, "3"):
        with pytest.raises(SoiError, match="probe"):
            probe_rows(10, bad, 0)


# ------------------------------------------------------------------------------------------ store / CLI
def run_cli(args: list, capsys) -> tuple[int, str, str]:
    from soi.cli import main as cli

    code = 0
    with mock.patch.object(sys, "argv", ["soi", *map(str, args)]):
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
    out, err = capsys.readouterr()
    return code, out, err


def test_soi_analyze_runs_on_generative_runs(chat, tmp_path, capsys):
    model, tok = chat
    train_sft(model, rows(8), tmp_path / "run", tokenizer=tok, max_steps=4, batch_size=4, lr=1e-2,
              checkpoint_every=2, probe=3, probe_max_new_tokens=4, progress=False)
    for run in (tmp_path / "run", tmp_path / "run" / "probe"):
        code, _, err = run_cli(["analyze", run], capsys)
        assert code == 0, err
        summary = json.loads((run / "analysis" / "summary.json").read_text())
        n = 8 if run.name == "run" else 3
        assert summary["groups"]["all"]["all"]["n"] == n
        table = pq.read_table(run / "analysis" / "per_example.parquet")
        assert set(table["gold_label"].to_pylist()) == {"correct"}


def test_reader_allows_generative_columns_only_in_generative_runs(chat, tmp_path, capsys):
    model, tok = chat
    run = tmp_path / "run"
    train_sft(model, rows(4), run, tokenizer=tok, max_steps=1, batch_size=4, checkpoint_every=1, probe=None,
              progress=False)
    part = run / "dynamics" / "ckpt-000000.rank-0000.parquet"
    table = pq.read_table(part)
    bad = table.set_column(table.schema.get_field_index("token_acc"), "token_acc",
                           pa.array([np.nan, 0, 0, 0], pa.float32()))
    write_part(run, bad, checkpoint=0)
    with pytest.raises(SoiError, match="'token_acc' has NaN"):
        load_dynamics(run)
    write_part(run, table, checkpoint=0)
    meta = RunMeta.load(run)
    del meta.extra["generative"]
    meta.save(run)
    code, _, err = run_cli(["analyze", run], capsys)
    assert code == 2 and "unexpected column(s) ['token_acc', 'logp', 'n_tokens']" in err
    stats = {k: np.zeros(2, np.float32) for k in ("p_gold", "margin", "loss", "logp", "token_acc")}
    assert gen_table(0, 1, np.arange(2), np.zeros(2, np.int16), stats | {"n_tokens": np.ones(2, np.int32)},
                     generations=["a", "b"]).column_names[-4:] == ["token_acc", "logp", "n_tokens", "generation"]


def test_bad_input_is_one_line_soi_error(chat, tmp_path):
    model, tok = chat
    with pytest.raises(SoiError, match="no training examples"):
        train_sft(model, [], tokenizer=tok, progress=False)
    with pytest.raises(SoiError, match=r"train\[1\]: field 'prompt'"):
        train_sft(model, [rows(1)[0], {"prompt": "", "response": "x"}], tokenizer=tok, progress=False)
    with pytest.raises(SoiError, match="duplicate example id 'ex0'"):
        train_sft(model, rows(1) * 2, tmp_path / "r", tokenizer=tok, progress=False)
    with pytest.raises(SoiError, match="checkpoint_every must be a positive integer"):
        train_sft(model, rows(2), tokenizer=tok, checkpoint_every=0, progress=False)
    with pytest.raises(SoiError, match="tokenizer="):
        train_sft(model, rows(2), progress=False)
