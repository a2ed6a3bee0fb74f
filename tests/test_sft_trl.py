"""soi.record.SoiSFTTrainer (TRL's SFTTrainer recording generative dynamics) on a tiny random Llama.

The recorded rows are checked against an independent float64 full-logits forward of each example alone, on the
model state each row was computed from (before the optimizer step that trained it; after the checkpoint's step for
filled rows); training itself is checked against a plain ``trl.SFTTrainer``. The resume and 2-process tests are in
``tests/test_sft_trl_procs.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

import datasets  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import SFTConfig  # noqa: E402

from soi.errors import SoiError  # noqa: E402
from soi.gen.record import answer_correct, load_generative  # noqa: E402
from soi.model.causal import load_causal_lm  # noqa: E402
from soi.record import GenProbe, SoiRecording, SoiSFTTrainer  # noqa: E402
from soi.store import load_dynamics, read_examples  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sft_trl_common as common  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class Snap(TrainerCallback):
    """The model's state at train begin and after every optimizer step (runs before soi's checkpoint)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def _take(self, model: Any) -> None:
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._take(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._take(model)


def reference(model_dir: Path, state: dict[str, torch.Tensor], dataset: Any) -> dict[str, np.ndarray]:
    """Per-example p_gold, margin, loss, logp, token_acc, n_tokens by row ``idx``: each example alone (no padding),
    full logits, float64 log-softmax over the positions whose next label is not -100."""
    model, _ = load_causal_lm(model_dir, device="cpu")
    model.load_state_dict(state)
    model.eval()
    out: dict[str, list[float]] = {k: [] for k in ("idx", "p_gold", "margin", "loss", "logp", "token_acc",
                                                   "n_tokens")}
    with torch.no_grad():
        for item in dataset:
            ids = torch.tensor([item["input_ids"]])
            z = model(input_ids=ids).logits[0, :-1].double()
            y = torch.tensor(item["labels"][1:])
            keep = y != -100
            z, y = z[keep], y[keep]
            lp = torch.log_softmax(z, -1)[torch.arange(len(y)), y]
            other = z.clone()
            other[torch.arange(len(y)), y] = -torch.inf
            out["idx"].append(item["idx"])
            out["p_gold"].append(float(lp.exp().mean()))
            out["margin"].append(float((z[torch.arange(len(y)), y] - other.max(1).values).mean()))
            out["loss"].append(float(-lp.mean()))
            out["logp"].append(float(lp.sum()))
            out["token_acc"].append(float((z.argmax(1) == y).double().mean()))
            out["n_tokens"].append(len(y))
    order = np.argsort(out["idx"])
    return {k: np.asarray(v)[order] for k, v in out.items() if k != "idx"}


# ---------------------------------------------------------------- 1. parity with an independent computation
def test_recorded_rows_equal_a_direct_log_softmax_of_the_state_they_came_from(tmp_path, tiny_llama):
    n, bs, steps = 10, 4, 4
    snap = Snap()
    trainer = common.make_trainer(tmp_path / "run", tmp_path / "out", tiny_llama, n=n, batch_size=bs,
                                  max_steps=steps, every_steps=1, callbacks=[snap])
    trainer.train()
    dyn = load_dynamics(tmp_path / "run")
    gen = load_generative(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert dyn.p_gold.shape == (n, steps) and dyn.steps.tolist() == [1, 2, 3, 4]
    assert meta["recording_mode"] == "train-pass" and meta["extra"]["generative"]["columns"][:3] == \
        ["token_acc", "logp", "n_tokens"]
    assert read_examples(tmp_path / "run")["example_id"].to_pylist() == [f"ex{i}" for i in range(n)]
    refs = [reference(tiny_llama, s, trainer.train_dataset) for s in snap.states]
    assert len(refs) == steps + 1
    filled = []
    for c in range(steps):
        before, after = refs[c], refs[c + 1]  # the step that trained a row / the state a filled row saw
        assert np.abs(before["loss"] - after["loss"]).min() > 1e-3  # the two states are far apart
        trained = np.isclose(dyn.loss[:, c], before["loss"], rtol=0, atol=1e-5)
        was_filled = np.isclose(dyn.loss[:, c], after["loss"], rtol=0, atol=1e-5)
        assert np.all(trained ^ was_filled), c
        assert trained.sum() == [bs, bs, n - 2 * bs, bs][c]  # step 3 is the epoch's last, short batch
        filled.append(int(was_filled.sum()))
        want = {k: np.where(trained, before[k], after[k]) for k in before}
        np.testing.assert_allclose(dyn.p_gold[:, c], want["p_gold"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(dyn.margin[:, c], want["margin"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gen["logp"][:, c], want["logp"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(gen["token_acc"][:, c], want["token_acc"], atol=1e-6)
        assert gen["n_tokens"][:, c].tolist() == want["n_tokens"].tolist()
        assert dyn.correct[:, c].tolist() == (want["token_acc"] >= 0.5).tolist()
    assert meta["extra"]["filled"] == filled


def test_training_equals_plain_sft_trainer(tmp_path, tiny_llama):
    """Recording changes nothing in training: same weights as trl.SFTTrainer after the same steps."""
    soi = common.make_trainer(tmp_path / "run", tmp_path / "a", tiny_llama, max_steps=4, every_steps=2)
    plain = common.make_trainer(None, tmp_path / "b", tiny_llama, max_steps=4, plain=True)
    soi.train()
    plain.train()
    a, b = soi.model.state_dict(), plain.model.state_dict()
    assert a.keys() == b.keys()
    start = load_causal_lm(tiny_llama, device="cpu")[0].state_dict()
    for k in a:  # Adam divides by sqrt(v): float-roundoff gradient differences show up at ~1e-6
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-2  # it did train, far beyond the tolerance


# ---------------------------------------------------------------- 2. probe and soi analyze
def test_probe_run_and_analyze(tmp_path, tiny_llama):
    from soi.analysis.per_example import analyze_run

    trainer = common.make_trainer(tmp_path / "run", tmp_path / "out", tiny_llama, max_steps=4, every_steps=2,
                                  probe=4)
    trainer.train()
    probe = tmp_path / "run" / "probe"
    pdyn = load_dynamics(probe)
    assert pdyn.p_gold.shape == (4, 2)
    ex = read_examples(probe)
    rows = {r["id"]: r for r in common.sft_rows(12)}
    for part in sorted((probe / "dynamics").glob("ckpt-*.parquet")):
        t = pq.read_table(part)
        gens = t["generation"].to_pylist()
        ids = ex["example_id"].to_pylist()
        examples = [type("E", (), {"answer": rows[i]["answer"], "response": rows[i]["completion"]})() for i in ids]
        assert t["pred"].to_pylist() == answer_correct(gens, examples).astype(int).tolist()
    main = analyze_run(tmp_path / "run").summary
    assert main["n_examples"] == 12
    assert analyze_run(probe).summary["n_examples"] == 4


# ---------------------------------------------------------------- 3. bad input: one error, nothing written
def _trainer(tmp_path: Path, model_dir: Path, *, ds: Any = None, model: Any = None, soi: Any = None,
             data_collator: Any = None, **config: Any) -> Any:
    m, tok = load_causal_lm(model_dir, device="cpu")
    args = SFTConfig(str(tmp_path / "out"), report_to=[], use_cpu=True, max_steps=1, **config)
    return SoiSFTTrainer(model=m if model is None else model, args=args, processing_class=tok,
                         train_dataset=datasets.Dataset.from_list(common.sft_rows(6)) if ds is None else ds,
                         soi=soi or SoiRecording(tmp_path / "run"), data_collator=data_collator)


@pytest.mark.parametrize("case", ["idx", "no-head", "packing", "dropped", "list", "mode", "probe", "collator"])
def test_bad_input_is_one_error_before_training(tmp_path, tiny_llama, case):
    from transformers import LlamaModel

    kw: dict[str, Any] = {}
    match = {"idx": "column 'idx'", "no-head": "no output-embedding head", "packing": "packing",
             "dropped": "dropped by SFTTrainer", "list": "datasets.Dataset", "mode": "train-pass",
             "probe": "GenProbe.size", "collator": "needs input_ids and labels"}[case]
    if case == "idx":
        kw["ds"] = datasets.Dataset.from_list([{**r, "idx": 5 - i} for i, r in enumerate(common.sft_rows(6))])
    elif case == "no-head":
        kw["model"] = LlamaModel(load_causal_lm(tiny_llama, device="cpu")[0].config)
    elif case == "packing":
        kw["packing"] = True
    elif case == "dropped":  # "Think." prompts leave no completion token within 20 tokens: TRL drops them
        kw["max_length"] = 20
    elif case == "list":
        kw["ds"] = common.sft_rows(6)
    elif case == "mode":
        kw["soi"] = SoiRecording(tmp_path / "run", mode="eval-pass")
    elif case == "collator":  # a collator that loses the labels
        kw["data_collator"] = lambda rows: {"input_ids": torch.tensor([r["input_ids"][:4] for r in rows])}
    with pytest.raises(SoiError, match=match) as exc:
        if case == "probe":
            GenProbe(0)
        else:
            _trainer(tmp_path, tiny_llama, **kw)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 4. the README's TRL example
def test_readme_trl_example_runs(tmp_path, monkeypatch):
    import re

    import soi.model
    from soi.model.causal import tiny_causal_lm

    data = Path(os.environ.get("SOI_DATA_DIR") or HERE.parents[1] / "shared" / "data")
    if not (data / "gsm8k" / "train.jsonl").is_file():
        pytest.skip(f"shared data not found at {data}")
    readme = (HERE.parent / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "SoiSFTTrainer" in b)
    tiny = tiny_causal_lm(tmp_path / "tiny-chat")  # ChatML template, like SmolLM2-Instruct
    monkeypatch.setattr(soi.model, "resolve_model", lambda name: str(tiny))
    monkeypatch.setenv("SOI_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    block = block.replace("max_steps=16", "max_steps=8").replace("max_new_tokens=64", "max_new_tokens=4")
    block = block.replace("max_length=256", "max_length=2048")  # the tiny tokenizer has byte tokens
    exec(compile(block, "README.md", "exec"), {})
    dyn = load_dynamics(tmp_path / "runs" / "sft-smollm2")
    assert dyn.p_gold.shape == (64, 2) and dyn.steps.tolist() == [4, 8]
    assert load_dynamics(tmp_path / "runs" / "sft-smollm2" / "probe").p_gold.shape == (8, 2)
    ex = read_examples(tmp_path / "runs" / "sft-smollm2")
    assert ex["example_id"][0].as_py() == "gsm8k-train-0" and ex["language"][0].as_py() == "en"
