"""The paper-shaped cross-lingual study on one GPU, with throughput and transfer figures in a results folder.

Runs ``benchmarks/gpu_crosslingual.yaml`` (Gemma 3 270M, bf16 autocast, 3 seeds, math k in {0, 50, 200} over 4 seen
and 6 unseen MGSM languages, intent k in {0, 100, 300, 1000} on MASSIVE en + fa) one task at a time into
``OUT/<task>/`` through :func:`soi.study.generative.run_generative_study`, then writes ``OUT/gpu_crosslingual.json``:
the device, wall and CPU time per task, per run training tokens/s (``result.json``), eval items/s, and the transfer
statistics with 95% paired bootstrap intervals (``benchmarks/crosslingual_intervals.py``) per task and metric. The
model folders (``model-best/``, ``model-final/``: ~1 GB each) are deleted after each task unless ``--keep-models``
(24 runs would fill a 64 GB disk). The study's own ``summary.json``, ``tables/`` and ``figures/`` stay in place.

    python benchmarks/gpu_crosslingual.py --out results/gpu-crosslingual            # on the GPU machine
    python benchmarks/gpu_crosslingual.py --toy --out /tmp/gpu-toy                  # CPU dry run, tiny random LM

``--toy`` shrinks everything (a 2-layer random Llama, a few items, k in {0, 4}, 2 seeds) to prove the script runs
end to end without a GPU; its numbers mean nothing. ``--tasks math`` runs one task; ``--budget-s`` stops before a
task when the time is spent (finished tasks are kept; rerunning resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from crosslingual_intervals import item_scores  # noqa: E402


def toy_config(config: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """The study shrunk to seconds on a CPU (same tasks and pools, a tiny random model)."""
    from soi.model.causal import tiny_causal_lm

    if not (model_dir / "config.json").is_file():
        tiny_causal_lm(model_dir, chat_template=False)
    cfg = json.loads(json.dumps(config))
    cfg |= {"name": "gpu-crosslingual-toy", "model": str(model_dir), "seeds": [0, 1],
            "training": {**cfg["training"], "batch_size": 4, "checkpoint_every": 2, "max_length": 96},
            "recording": {"probe": 2, "probe_max_new_tokens": 4},
            "generation": {"max_new_tokens": 6, "batch_size": 16}}
    small = {"math": {"english_n": 8, "seen": ["es", "fr"], "unseen": ["de"], "k": [0, 4], "n_eval": 3,
                      "n_validation": 2},
             "intent": {"english_n": 8, "k": [0, 4], "n_eval": 4, "n_validation": 2}}
    for task, spec in cfg["tasks"].items():
        spec["mixture"] = {**spec.get("mixture", {}), **small.get(task, {})}
    return cfg


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info |= {"device": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported(),
                 "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}
    for pkg in ("transformers", "trl", "peft"):
        try:
            info[pkg] = __import__(pkg).__version__
        except ImportError:
            info[pkg] = None
    return info


def run_stats(out: Path) -> list[dict[str, Any]]:
    """Per run directory: steps, training tokens/s, train / eval / total seconds, eval items/s."""
    rows = []
    for res_path in sorted(out.glob("runs/*/seed-*/result.json")):
        r = json.loads(res_path.read_text(encoding="utf-8"))
        n_eval = sum(m["n"] for ev in r["eval"].values() for m in ev["languages"].values())
        eval_s = float(r.get("eval_seconds") or 0.0)
        rows.append({"run": res_path.parent.parent.name, "seed": r["seed"], "k": r["k"], "n_train": r["n_train"],
                     "steps": r.get("steps"), "best_step": r.get("best_step"),
                     "train_tokens": r.get("train_tokens"), "train_seconds": r.get("train_seconds"),
                     "tokens_per_second": r.get("tokens_per_second"), "eval_items": n_eval,
                     "eval_seconds": eval_s, "eval_items_per_second": round(n_eval / eval_s, 2) if eval_s else None,
                     "elapsed_s": r.get("elapsed_s")})
    return rows


def task_statistics(out: Path, task: str, config: dict[str, Any], n_boot: int) -> dict[str, Any]:
    from soi.analysis.transfer import transfer_statistics

    spec = config["tasks"][task]
    mix = spec.get("mixture", {})
    metric = spec.get("metric") or ("exact_match" if (spec.get("kind") or task) == "math" else "rouge_l")
    metrics = [metric] + (["label_match"] if task == "intent" else [])
    stats = {}
    for m in metrics:
        ks, scores = item_scores(out, task, task, m)
        stats[m] = transfer_statistics(scores, ks, seen=mix.get("seen", []), unseen=mix.get("unseen", []),
                                       metric=m, n_boot=n_boot, seed=0)
    return stats


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=HERE / "gpu_crosslingual.yaml")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tasks", nargs="+", default=None, help="default: every task of the config, in order")
    p.add_argument("--toy", action="store_true", help="CPU dry run at a toy size (tiny random LM)")
    p.add_argument("--keep-models", action="store_true", help="keep model-best/ and model-final/ folders")
    p.add_argument("--budget-s", type=float, default=None, help="skip the remaining tasks past this many seconds")
    p.add_argument("--n-boot", type=int, default=4000)
    a = p.parse_args(argv)

    import torch

    from soi.config.generative import GenerativeStudyConfig
    from soi.study.generative import run_generative_study

    config = yaml.safe_load(a.config.read_text(encoding="utf-8"))
    if a.toy:
        config = toy_config(config, a.out / "tiny-lm")
    elif not torch.cuda.is_available():
        print("warning: no CUDA device; this runs the full study on the CPU (hours). Use --toy for a dry run.",
              file=sys.stderr)
    tasks = a.tasks or list(config["tasks"])
    unknown = sorted(set(tasks) - set(config["tasks"]))
    if unknown:
        raise SystemExit(f"error: --tasks: unknown task(s) {unknown}; the config has {list(config['tasks'])}")
    report: dict[str, Any] = {"config": str(a.config), "toy": a.toy, "device": device_info(), "tasks": {}}
    t_start = time.perf_counter()
    for task in tasks:
        if a.budget_s is not None and time.perf_counter() - t_start > a.budget_s:
            report["tasks"][task] = {"skipped": f"past --budget-s {a.budget_s}"}
            continue
        one = {**config, "name": f"{config['name']}-{task}", "tasks": {task: config["tasks"][task]}}
        cfg = GenerativeStudyConfig.from_dict(one, source=f"{a.config.name} (task {task})")
        out = a.out / task
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        w0, c0 = time.perf_counter(), time.process_time()
        summary = run_generative_study(cfg, out, progress=True)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if torch.cuda.is_available():
            report["tasks"].setdefault(task, {})["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30,
                                                                            2)
        runs = run_stats(out)
        tps = [r["tokens_per_second"] for r in runs if r["tokens_per_second"]]
        report["tasks"].setdefault(task, {}).update({
            "out": str(out), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "n_runs": len(runs),
            "tokens_per_second_median": sorted(tps)[len(tps) // 2] if tps else None, "runs": runs,
            "figures": summary.get("figures", []),
            "statistics": task_statistics(out, task, one, a.n_boot)})
        if not a.keep_models:
            for d in out.glob("runs/*/seed-*/model-*"):
                shutil.rmtree(d, ignore_errors=True)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    from soi._io import write_json

    write_json(a.out / "gpu_crosslingual.json", report)
    print(json.dumps({k: v for k, v in report.items() if k != "tasks"} | {
        "tasks": {t: {k: v for k, v in r.items() if k in ("wall_s", "cpu_s", "n_runs", "tokens_per_second_median",
                                                          "skipped")} for t, r in report["tasks"].items()}},
        indent=1))
    return report


if __name__ == "__main__":
    main()
