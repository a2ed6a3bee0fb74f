"""Calibration of soi.analysis.transfer on simulated k-grid studies: false-positive rates of every flag under a
planted null, power under a planted gain, interval coverage. Prints one JSON object.

    .venv/bin/python benchmarks/calibration_transfer_stats.py --studies 1000 --n-boot 400

Studies: two languages (one seen, one unseen), k in {0, 16, 64}, binary item scores with item difficulty
a_i ~ N(0, 1.5) on the logit scale, a seed effect per run shared by the languages (sd ``--seed-sd``) plus a
language-specific half, and a planted gain (logits) on the seen language at k > 0.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from soi.analysis.transfer import transfer_statistics
from soi.simulate import simulate_transfer_study

KS = [0, 16, 64]



def rates(studies: int, n_boot: int, *, n: int, seeds: int, gain: float, seed_sd: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    hits = np.zeros(4)
    for i in range(studies):
        study = simulate_transfer_study(rng, KS, n=n, seeds=seeds, gain=gain, seed_sd=seed_sd)
        st = transfer_statistics(study, KS, seen=["es"], unseen=["de"], n_boot=n_boot, seed=i)
        hits += [st["languages"]["es"]["gain"]["16"]["significant"], st["languages"]["de"]["gain"]["64"][
            "significant"], st["gap"]["64"]["significant"], st["gap_slope"]["significant"]]
    r = hits / studies
    return {"n_items": n, "seeds": seeds, "seed_sd": seed_sd, "planted_gain_logits": gain,
            "seen_gain_k16": r[0], "unseen_gain_k64": r[1], "gap_k64": r[2], "gap_slope": r[3]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--n-boot", type=int, default=400)
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    out = {"alpha": 0.05, "studies": args.studies, "n_boot": args.n_boot,
           "mc_se_at_0.05": float(np.sqrt(0.05 * 0.95 / args.studies)), "null": [], "power": []}
    for seeds, sd in ((1, 0.0), (3, 0.5)):
        out["null"].append(rates(args.studies, args.n_boot, n=40, seeds=seeds, gain=0.0, seed_sd=sd, seed=seeds))
    for gain in (1.0, 2.0):
        out["power"].append(rates(args.studies // 4, args.n_boot, n=40, seeds=3, gain=gain, seed_sd=0.3, seed=7))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["cpu_s"] = round(time.process_time() - c0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
