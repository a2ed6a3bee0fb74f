"""Synthetic training dynamics: a run directory whose logits follow a simple learning model.

Used by ``soi demo --study synthetic``, the benchmarks and tests; it is *not* a trained model. Each
example has a difficulty ``d ~ N(0, 1)``; a fraction is mislabelled. At checkpoint ``t`` of ``E`` the
logit of the true class is ``gain * (t+1)/E * (skill - d) + noise`` and every other logit is noise,
so easy examples are learned early, hard ones late or never, and noise makes some forgettable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soi.store import RunMeta, RunWriter, examples_table


def _draw_examples(rng: np.random.Generator, shape: int | tuple[int, ...], classes: int, label_noise: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Examples of the learning model: true class, gold label (``label_noise`` of them flipped to another class) and
    difficulty ``N(0, 1)``, drawn from ``rng`` in that order (the order fixes every seed's results)."""
    true = rng.integers(0, classes, shape)
    flip = rng.random(shape) < label_noise
    gold = np.where(flip, (true + rng.integers(1, classes, shape)) % classes, true) if classes > 1 else true
    return true, gold, rng.normal(0.0, 1.0, shape)


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
    run_effect: float = 0.0,
    planted: np.ndarray | None = None,
    planted_shift: float = 0.0,
) -> Path:
    """Write a synthetic run to ``run_dir`` and return its path.

    ``difficulty_seed`` fixes the examples (ids, gold labels, difficulty) independently of ``seed``, so
    two runs with the same ``difficulty_seed`` share examples and differ only in training noise and
    ``skill`` -- the shape of a single-setting vs multi-setting comparison. ``run_effect`` adds a run-level
    skill offset ``N(0, run_effect)`` drawn from ``seed`` (a seed effect shared by all examples);
    ``planted`` (bool, n) marks examples whose learning curve gets ``planted_shift`` added (a planted effect).
    """
    data_rng = np.random.default_rng(seed if difficulty_seed is None else difficulty_seed)
    rng = np.random.default_rng([seed, 1])
    labels = [f"class_{i}" for i in range(classes)]
    groups = groups or {"task": ["synthetic"]}
    task_names = groups.get("task", ["synthetic"])
    true, gold, difficulty = _draw_examples(data_rng, n, classes, label_noise)
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
    if run_effect > 0:
        skill = skill + float(np.random.default_rng([seed, 2]).normal(0.0, run_effect))
    if planted is not None:
        mask = np.asarray(planted, bool)
        if mask.shape != (n,):
            raise ValueError(f"planted must be a bool array of shape ({n},), got {mask.shape}")
        shift = shift + np.where(mask, planted_shift, 0.0)
    for t in range(checkpoints):
        logits = rng.normal(0.0, noise, (n, classes)).astype(np.float32)
        logits[idx, true] += (4.0 * (t + 1) / checkpoints * (skill - difficulty + shift)).astype(np.float32)
        perm = rng.permutation(n)  # training order differs per epoch; the store sorts it back
        writer.write_logits(checkpoint=t, step=(t + 1) * steps_per_checkpoint, idx=idx[perm],
                            logits=logits[perm], gold=gold[perm], keep_logits=keep_logits)
    return Path(run_dir)


def simulate_seed_folder(folder: str | Path, seeds: list[int] | tuple[int, ...], **kwargs) -> Path:
    """Write ``folder/seed-<s>/`` runs of :func:`simulate_run` (same examples: ``difficulty_seed`` defaults to 0)."""
    kwargs.setdefault("difficulty_seed", 0)
    for s in seeds:
        simulate_run(Path(folder) / f"seed-{s}", seed=int(s), **kwargs)
    return Path(folder)


@dataclass(frozen=True)
class SeedStudyModel:
    """The two-setting seed-study model of :func:`simulate_study` and :func:`simulate_studies`.

    The model of :func:`simulate_run`: example difficulty ``d ~ N(0, 1)``, per run a skill offset
    ``u ~ N(0, run_effect)`` shared by all its examples (the run-level seed effect) and per (run, example)
    an offset ``N(0, example_noise)``; at checkpoint t the true-class logit is
    ``4 (t+1)/E (skill + u - d + offset)`` plus N(0, noise) logit noise. With ``skill_a == skill_b`` and no
    planted effect both settings are the same process (a null study). ``planted_fraction`` of the examples
    (``planted`` in the result) get ``planted_shift`` added to their learning curves in every B run: the
    multi setting makes them easier (> 0) or harder (< 0).
    """

    n: int = 2000
    checkpoints: int = 6
    seeds_a: int = 3
    seeds_b: int = 3
    classes: int = 3
    skill_a: float = 1.0
    skill_b: float = 1.0
    run_effect: float = 0.15
    example_noise: float = 0.3
    noise: float = 1.0
    label_noise: float = 0.05
    planted_fraction: float = 0.0
    planted_shift: float = 0.0

    def __post_init__(self) -> None:
        if min(self.n, self.checkpoints, self.seeds_a, self.seeds_b, self.classes) < 1:
            raise ValueError("n, checkpoints, seeds_a, seeds_b and classes must be >= 1")


def simulate_study(*, seed: int = 0, **model: float) -> dict[str, np.ndarray]:
    """Correctness of one two-setting seed study on shared examples, as arrays (no files).

    ``model``: the fields of :class:`SeedStudyModel` (its defaults where left out).

    Returns
    -------
    dict with ``correct_a`` bool (seeds_a, n, E), ``correct_b`` bool (seeds_b, n, E), ``planted`` bool (n,),
    ``gold`` (n,)
    """
    m = SeedStudyModel(**model)
    n, checkpoints, classes = m.n, m.checkpoints, m.classes
    rng = np.random.default_rng([int(seed), 2024])
    true, gold, difficulty = _draw_examples(rng, n, classes, m.label_noise)
    planted = np.zeros(n, bool)
    if m.planted_fraction > 0:
        planted[rng.permutation(n)[: round(m.planted_fraction * n)]] = True
    idx = np.arange(n)

    def one_run(skill: float, shift: np.ndarray | None) -> np.ndarray:
        u = rng.normal(0.0, m.run_effect) if m.run_effect > 0 else 0.0
        offset = rng.normal(0.0, m.example_noise, n)
        level = skill + u - difficulty + offset + (0.0 if shift is None else shift)
        out = np.empty((n, checkpoints), bool)
        for t in range(checkpoints):
            logits = rng.normal(0.0, m.noise, (n, classes))
            logits[idx, true] += 4.0 * (t + 1) / checkpoints * level
            out[:, t] = logits.argmax(axis=1) == gold
        return out

    shift_b = np.where(planted, m.planted_shift, 0.0) if planted.any() else None
    correct_a = np.stack([one_run(m.skill_a, None) for _ in range(m.seeds_a)])
    correct_b = np.stack([one_run(m.skill_b, shift_b) for _ in range(m.seeds_b)])
    return {"correct_a": correct_a, "correct_b": correct_b, "planted": planted, "gold": gold}


def simulate_studies(n_studies: int, *, seed: int = 0, **model: float) -> dict[str, np.ndarray]:
    """``n_studies`` independent studies of the :class:`SeedStudyModel` at once (vectorised).

    ``model``: the fields of :class:`SeedStudyModel` (its defaults where left out, but ``n`` = 800). Each study
    draws its own examples, run-level seed effects and noise (another random stream than :func:`simulate_study`,
    same distributions). Returns ``correct_a`` bool (n_studies, seeds_a, n, E), ``correct_b`` bool
    (n_studies, seeds_b, n, E), ``planted`` bool (n_studies, n), ``gold`` (n_studies, n).
    """
    if n_studies < 1:
        raise ValueError(f"n_studies must be >= 1, got {n_studies}")
    m = SeedStudyModel(**{"n": 800, **model})
    n, checkpoints, classes, seeds_a = m.n, m.checkpoints, m.classes, m.seeds_a
    rng = np.random.default_rng([int(seed), 2025])
    shape = (n_studies, n)
    true, gold, difficulty = _draw_examples(rng, shape, classes, m.label_noise)
    planted = np.zeros(shape, bool)
    n_planted = round(m.planted_fraction * n)
    if n_planted > 0:
        order = np.argsort(rng.random(shape), axis=1)[:, :n_planted]
        np.put_along_axis(planted, order, True, axis=1)
    r = seeds_a + m.seeds_b
    skill = np.r_[np.full(seeds_a, m.skill_a), np.full(m.seeds_b, m.skill_b)]  # (R,)
    u = rng.normal(0.0, m.run_effect, (n_studies, r)) if m.run_effect > 0 else np.zeros((n_studies, r))
    level = (skill[None, :, None] + u[:, :, None] - difficulty[:, None, :]
             + rng.normal(0.0, m.example_noise, (n_studies, r, n)))
    level[:, seeds_a:] += np.where(planted, m.planted_shift, 0.0)[:, None, :]
    onehot = true[:, None, :, None] == np.arange(classes)  # (N, 1, n, C)
    correct = np.empty((n_studies, r, n, checkpoints), bool)
    for t in range(checkpoints):
        logits = rng.normal(0.0, m.noise, (n_studies, r, n, classes))
        logits += onehot * (4.0 * (t + 1) / checkpoints * level)[..., None]
        correct[..., t] = logits.argmax(axis=-1) == gold[:, None, :]
    return {"correct_a": correct[:, :seeds_a], "correct_b": correct[:, seeds_a:], "planted": planted, "gold": gold}


def simulate_transfer_study(rng: np.random.Generator, ks: list[int] | tuple[int, ...], *, n: int, seeds: int,
                            gain: float, seed_sd: float, seen: str = "es", unseen: str = "de"
                            ) -> dict[str, np.ndarray]:
    """One k-grid transfer study with binary item scores, ``{language: (k, seed, item)}`` arrays.

    Item difficulty :math:`a_i \\sim N(0, 1.5)` (logit), a seed effect per run shared by the languages plus a
    language-specific part (sd ``seed_sd`` and ``seed_sd / 2``), and a planted ``gain`` (logit) on the ``seen``
    language at every k > 0; ``unseen`` gets none. Used by the transfer statistics' calibration tests and benchmark.
    """
    u = rng.normal(0, seed_sd, (len(ks), seeds))
    study = {}
    for lang, planted in ((seen, gain), (unseen, 0.0)):
        a = rng.normal(0, 1.5, n)
        g = np.array([planted if k > 0 else 0.0 for k in ks])
        u_l = u + rng.normal(0, seed_sd / 2, u.shape)
        p = 1 / (1 + np.exp(-(a[None, None, :] + u_l[:, :, None] + g[:, None, None])))
        study[lang] = (rng.random(p.shape) < p).astype(float)
    return study


def simulate_paired_eval(n_studies: int, *, seeds_a: int, seeds_b: int, n: int, seed_sd: float,
                         shift: float = 0.0, interaction_sd: float = 0.0, base: float = 1.5, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Held-out correctness of two settings' seeds on the same items, ``(studies, seeds, n)`` bool arrays.

    Item difficulty :math:`d_e \\sim N(0, 1.5)` (logit, drawn per study and shared by both settings), a seed effect
    :math:`u_s \\sim N(0, \\text{seed\\_sd})` per run shared by all its items, and a planted ``shift`` (logit) on
    every item of B, plus an item x setting interaction :math:`w_e \\sim N(0, \\text{interaction\\_sd})` on B's items:
    P(correct) = sigmoid(base - d_e + u_s + [B] (shift + w_e)). ``shift = interaction_sd = 0`` is the null (the two
    settings are the same process). Used by the paired test-set statistics' calibration tests and benchmark.
    """
    rng = np.random.default_rng([int(seed), 17])
    d = rng.normal(0.0, 1.5, (n_studies, 1, n))
    u = rng.normal(0.0, seed_sd, (n_studies, seeds_a + seeds_b, 1))
    logit = base - d + u
    logit[:, seeds_a:] += shift + rng.normal(0.0, 1.0, (n_studies, 1, n)) * interaction_sd
    correct = rng.random(logit.shape) < 1.0 / (1.0 + np.exp(-logit))
    return correct[:, :seeds_a], correct[:, seeds_a:]
