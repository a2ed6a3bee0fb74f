"""Synthetic training dynamics: a run directory whose logits follow a simple learning model.

Used by ``soi demo --study synthetic``, the benchmarks and tests; it is *not* a trained model. Each
example has a difficulty ``d ~ N(0, 1)``; a fraction is mislabelled. At checkpoint ``t`` of ``E`` the
logit of the true class is ``gain * (t+1)/E * (skill - d) + noise`` and every other logit is noise,
so easy examples are learned early, hard ones late or never, and noise makes some forgettable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from soi.store import RunMeta, RunWriter, examples_table


def simulate_run(
    run_dir: str | Path,
    *,
    n: int = 2000,
    checkpoints: int = 6,
    classes: int = 3,
    seed: int = 0,
    skill: float = 1.0,
    noise: float = 1.0,
    label_noise: float = 0.05,
    groups: dict[str, list[str]] | None = None,
    difficulty_seed: int | None = None,
    setting: str = "synthetic",
    keep_logits: bool = False,
    steps_per_checkpoint: int = 100,
) -> Path:
    """Write a synthetic run to ``run_dir`` and return its path.

    ``difficulty_seed`` fixes the examples (ids, gold labels, difficulty) independently of ``seed``, so
    two runs with the same ``difficulty_seed`` share examples and differ only in training noise and
    ``skill`` -- the shape of a single-setting vs multi-setting comparison.
    """
    data_rng = np.random.default_rng(seed if difficulty_seed is None else difficulty_seed)
    rng = np.random.default_rng([seed, 1])
    labels = [f"class_{i}" for i in range(classes)]
    groups = groups or {"task": ["synthetic"]}
    task_names = groups.get("task", ["synthetic"])
    true = data_rng.integers(0, classes, n)
    flip = data_rng.random(n) < label_noise
    gold = np.where(flip, (true + data_rng.integers(1, classes, n)) % classes, true) if classes > 1 else true
    difficulty = data_rng.normal(0.0, 1.0, n)
    tags = {k: np.asarray(v)[data_rng.integers(0, len(v), n)] for k, v in groups.items()}
    ids = np.char.add("ex-", np.arange(n).astype(str))
    meta = RunMeta(tasks={t: labels for t in task_names}, setting=setting, seed=seed, model="simulated",
                   extra={"simulated": {"n": n, "checkpoints": checkpoints, "skill": skill, "noise": noise,
                                        "label_noise": label_noise}})
    writer = RunWriter(run_dir, meta)
    writer.write_examples(examples_table(ids, gold, task=tags.get("task", task_names[0]),
                                         source=tags.get("source"), language=tags.get("language")))
    idx = np.arange(n)
    shift = rng.normal(0.0, 0.3, n)  # per-run, per-example offset: runs disagree on some examples
    for t in range(checkpoints):
        logits = rng.normal(0.0, noise, (n, classes)).astype(np.float32)
        logits[idx, true] += (4.0 * (t + 1) / checkpoints * (skill - difficulty + shift)).astype(np.float32)
        perm = rng.permutation(n)  # training order differs per epoch; the store sorts it back
        writer.write_logits(checkpoint=t, step=(t + 1) * steps_per_checkpoint, idx=idx[perm],
                            logits=logits[perm], gold=gold[perm], keep_logits=keep_logits)
    return Path(run_dir)
