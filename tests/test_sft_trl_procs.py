"""SoiSFTTrainer in subprocesses: kill -9 and resume equals an uninterrupted run; two processes under
``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU) equal one process (``tests/sft_trl_common.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from soi.gen.record import load_generative
from soi.store import load_dynamics

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sft_trl_common as common  # noqa: E402
from hf_common import ACCELERATE, needs_accelerate, run_process  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- 4. kill -9 and resume
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, tiny_llama):
    # 12 rows, batch 4: 3 steps per epoch; soi checkpoints every 2 steps, Trainer saves every 3: the kill after
    # step 3's save leaves a partial soi checkpoint (step 3 of 4) to restore; probe parts after it are rewritten
    opts = {"max_steps": 8, "every_steps": 2, "probe": 3, "seed": 3,
            "config": {"save_strategy": "steps", "save_steps": 3}}
    script = str(HERE / "sft_trl_common.py")
    base = {"run_dir": str(tmp_path / "run"), "out_dir": str(tmp_path / "out"), "model_dir": str(tiny_llama)}

    def launch(**extra: Any) -> None:
        run_process([sys.executable, script, json.dumps({**base, **opts, **extra})], timeout=180,
                    log=tmp_path / "stderr.txt", expect_kill="kill_at" in extra)

    launch(kill_at=3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("checkpoint-")) == \
        ["checkpoint-3"]
    launch(resume=True)
    common.make_trainer(tmp_path / "ref", tmp_path / "ref-out", tiny_llama, **opts).train()
    for sub in ("", "probe"):
        got, want = load_dynamics(tmp_path / "run" / sub), load_dynamics(tmp_path / "ref" / sub)
        assert got.steps.tolist() == want.steps.tolist() == [2, 4, 6, 8]
        for col in ("pred", "p_gold", "margin", "loss"):
            np.testing.assert_allclose(getattr(got, col), getattr(want, col), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{sub}:{col}")
        g, w = load_generative(tmp_path / "run" / sub), load_generative(tmp_path / "ref" / sub)
        for col in ("token_acc", "logp", "n_tokens"):
            np.testing.assert_allclose(g[col], w[col], rtol=1e-6, atol=1e-6, err_msg=f"{sub}:{col}")
    meta = [json.loads((tmp_path / d / "run.json").read_text())["extra"]["filled"] for d in ("run", "ref")]
    assert meta[0] == meta[1] and len(meta[0]) == 4


# ---------------------------------------------------------------- 5. two processes (accelerate launch, gloo)
@needs_accelerate
def test_two_processes_equal_single_process(tmp_path, tiny_llama):
    # 13 rows, 2 ranks x batch 2: the distributed sampler pads with a duplicate; lr=0, so the numbers depend on
    # the inputs only and must equal a single-process run's (which sees the rows in other batches and orders)
    opts = {"n": 13, "lr": 0.0, "batch_size": 2, "max_steps": 8, "every_steps": 4}
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", "29517", str(HERE / "sft_trl_common.py"),
           json.dumps({"run_dir": str(tmp_path / "ddp"), "out_dir": str(tmp_path / "ddp-out"),
                       "model_dir": str(tiny_llama), **opts})]
    run_process(cmd, timeout=240, log=tmp_path / "stderr.txt")
    single = {**opts, "batch_size": 4, "max_steps": 4, "every_steps": 2}  # the same 4 (2 x 2) rows per step
    common.make_trainer(tmp_path / "single", tmp_path / "single-out", tiny_llama, **single).train()
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["extra"]["world_size"] == 2
    parts = {p.name: pq.read_table(p) for p in sorted((tmp_path / "ddp" / "dynamics").glob("ckpt-*.parquet"))}
    assert sorted(parts) == [f"ckpt-{c:06d}.rank-{r:04d}.parquet" for c in range(2) for r in range(2)]
    for c in range(2):
        idx = [parts[f"ckpt-{c:06d}.rank-{r:04d}.parquet"]["idx"].to_pylist() for r in range(2)]
        assert sorted(idx[0] + idx[1]) == list(range(13))  # every example exactly once, across ranks
    ddp, one = load_dynamics(tmp_path / "ddp"), load_dynamics(tmp_path / "single")
    assert np.array_equal(ddp.pred, one.pred)
    for col in ("p_gold", "margin", "loss"):
        np.testing.assert_allclose(getattr(ddp, col), getattr(one, col), rtol=1e-5, atol=1e-6, err_msg=col)
    g, w = load_generative(tmp_path / "ddp"), load_generative(tmp_path / "single")
    for col in ("token_acc", "logp", "n_tokens"):
        np.testing.assert_allclose(g[col], w[col], rtol=1e-5, atol=1e-5, err_msg=col)
