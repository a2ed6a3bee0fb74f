"""Calibration of soi's paired test-set statistics (soi.analysis.paired) on simulated held-out sets: how often each
test flags at alpha = 0.05 when the two settings are the same process with a seed effect (false positives), when B
is better (power), and the coverage of the interval with an item x setting interaction. Prints one JSON object.

    .venv/bin/python benchmarks/calibration_paired.py --studies 2000 --loop-studies 400 --n-boot 400

Studies (``soi.simulate.simulate_paired_eval``): n items with difficulty d_e ~ N(0, 1.5) (logit) shared by both
settings, a seed effect u_s ~ N(0, seed_sd) per run shared by all its items, P(correct) = sigmoid(1.5 - d_e + u_s
[+ shift on B]). Tests: the seed-and-item t-test (the flag soi prints with >= 2 seeds per side; vectorised over
``--studies``), and over ``--loop-studies`` the item-level clustered McNemar, the two-way percentile bootstrap
interval (excludes 0) and the exact seed-permutation test; with one seed per side McNemar's test.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.special import expit, stdtrit

from soi.analysis.paired import (
    bootstrap_accuracy_difference,
    clustered_mcnemar,
    permutation_seeds,
    two_way_t,
)
from soi.analysis.transitions import mcnemar
from soi.simulate import simulate_paired_eval

ALPHA = 0.05
EFFECTS = {"none": 0.0, "2pp": 0.15, "5pp": 0.37}  # logit sd of the seed effect -> its accuracy sd (reported)


def seed_effect_sd(seed_sd: float) -> float:
    """sd over seeds of the population accuracy (mean over items of sigmoid(1.5 - d + u))."""
    rng = np.random.default_rng(0)
    d = rng.normal(0, 1.5, 2000)
    return float(expit(1.5 - d[None] + rng.normal(0, seed_sd, 4000)[:, None]).mean(axis=1).std())


def null_rates(studies: int, loop: int, n_boot: int, *, seeds: int, n: int, seed_sd: float, shift: float = 0.0,
               seed: int) -> dict:
    a, b = simulate_paired_eval(studies, seeds_a=seeds, seeds_b=seeds, n=n, seed_sd=seed_sd, shift=shift, seed=seed)
    out: dict = {"seeds": f"{seeds} + {seeds}", "n_items": n, "seed_sd_logit": seed_sd,
                 "seed_sd_accuracy": round(seed_effect_sd(seed_sd), 4), "shift_logit": shift}
    if seeds == 1:
        out["mcnemar"] = float(np.mean([mcnemar(a[i, 0], b[i, 0])["p_value"] <= ALPHA for i in range(loop)]))
        out["loop_studies"] = loop
        return out
    r = two_way_t(a, b)
    out |= {"studies": studies, "seed_item_t": float(np.mean(r["p_value"] <= ALPHA)),
            "median_df": round(float(np.median(r["df"])), 2), "loop_studies": loop}
    if shift:
        out["seed_item_t_b_better"] = float(np.mean((r["p_value"] <= ALPHA) & (r["observed"] > 0)))
        out["mean_difference"] = round(float(r["observed"].mean()), 4)
    if not loop:
        return out
    sl = slice(0, loop)
    out["clustered_mcnemar"] = float(np.mean([clustered_mcnemar(x, y)["p_value"] <= ALPHA
                                              for x, y in zip(a[sl], b[sl], strict=True)]))
    out["bootstrap_excludes_0"] = float(np.mean([bootstrap_accuracy_difference(x, y, n_boot=n_boot, seed=i)
                                                 ["significant"] for i, (x, y) in enumerate(zip(a[sl], b[sl],
                                                                                                 strict=True))]))
    out["permutation"] = float(np.mean([permutation_seeds(x.mean(axis=1), y.mean(axis=1))["p_value"] <= ALPHA
                                        for x, y in zip(a[sl], b[sl], strict=True)]))
    return out


def coverage(studies: int, *, seeds: int, n: int, interaction_sd: float, seed: int) -> dict:
    """Share of intervals covering the expected difference E[D] (items and seeds redrawn) with an interaction."""
    rng = np.random.default_rng(1)
    d, u = rng.normal(0, 1.5, 2_000_000), rng.normal(0, 0.2, 2_000_000)
    w = rng.normal(0, interaction_sd, d.size)
    truth = float((expit(1.5 - d + u + w) - expit(1.5 - d + u)).mean())
    a, b = simulate_paired_eval(studies, seeds_a=seeds, seeds_b=seeds, n=n, seed_sd=0.2,
                                interaction_sd=interaction_sd, seed=seed)
    r = two_way_t(a, b)
    half = stdtrit(r["df"], 1 - ALPHA / 2) * r["se"]
    seeds_only = stdtrit(2 * seeds - 2, 1 - ALPHA / 2) * np.sqrt(r["v_seeds"])
    return {"seeds": f"{seeds} + {seeds}", "n_items": n, "interaction_sd_logit": interaction_sd,
            "expected_difference": round(truth, 4), "coverage": float(np.mean(np.abs(r["observed"] - truth) <= half)),
            "coverage_without_item_part": float(np.mean(np.abs(r["observed"] - truth) <= seeds_only)),
            "mean_V_over_var_D": round(float(np.mean(r["se"] ** 2) / r["observed"].var()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=2000)
    ap.add_argument("--loop-studies", type=int, default=400)
    ap.add_argument("--n-boot", type=int, default=400)
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {"alpha": ALPHA, "mc_se_at_0.05": {"studies": float(np.sqrt(ALPHA * (1 - ALPHA) / args.studies)),
                                                    "loop_studies": float(np.sqrt(ALPHA * (1 - ALPHA) /
                                                                                  args.loop_studies))},
                 "null": [], "power": [], "coverage": []}
    for seeds in (1, 2, 3, 5):
        for n in (200, 1000):
            for sd in EFFECTS.values():
                out["null"].append(null_rates(args.studies, args.loop_studies, args.n_boot, seeds=seeds, n=n,
                                              seed_sd=sd, seed=1000 * seeds + n))
    for seeds in (3, 5):
        for sd in EFFECTS.values():
            for shift in (0.3, 0.5):
                r = null_rates(args.studies // 4, 0, args.n_boot, seeds=seeds, n=500, seed_sd=sd, shift=shift,
                               seed=7 + seeds)
                out["power"].append(r)
    for seeds in (3, 5):
        for isd in (0.0, 1.0):
            out["coverage"].append(coverage(args.studies, seeds=seeds, n=200, interaction_sd=isd, seed=seeds))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["cpu_s"] = round(time.process_time() - c0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
