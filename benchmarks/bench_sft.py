"""Benchmark: causal-LM SFT throughput of :func:`soi.gen.sft.train_sft` (SmolLM2-135M by default).

Full fine-tuning (AdamW, response-only loss) on batches of ``--batch-size`` sequences of exactly ``--seq-len``
tokens: GSM8K and oasst_fr training pairs (the offline copies in ``$SOI_DATA_DIR`` or ``<repo>/../shared/data``)
whose formatted prompt + response reaches ``--seq-len`` tokens, truncated to it (``max_length``), so every
batch has ``batch x seq_len`` non-padding tokens. One untimed warm-up run of ``--warmup`` steps, then
``--steps`` timed optimizer steps in one ``train_sft`` call (on CUDA each step ends with a synchronize).
Reported: median / mean step time, tokens per second (all non-padding tokens of the forward passes, prompt
included) and response (loss) tokens per second; plus the cost of one dynamics checkpoint: the teacher-forced
no-grad pass over the training examples and greedy decoding of a probe.

Prints one JSON object. Usage::

    python benchmarks/bench_sft.py                                   # CPU, 1 thread, batch 8 x 256 tokens
    python benchmarks/bench_sft.py --threads 2 --steps 10
    python benchmarks/bench_sft.py --device cuda --batch-size 16     # GPU: bf16 autocast (dtype auto)
    python benchmarks/bench_sft.py --model gemma3-270m --lora        # LoRA r=8 on all linear layers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from soi.data import load_split
from soi.gen.sft import PromptFormat, load_causal_lm, train_sft

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> str:
    return os.environ.get("SOI_DATA_DIR") or str(REPO.parent / "shared" / "data")


def long_rows(tokenizer, n: int, seq_len: int) -> list[dict]:
    """``n`` training rows whose formatted length is at least ``seq_len`` tokens."""
    fmt = PromptFormat(tokenizer)
    out: list[dict] = []
    for name in ("gsm8k", "oasst_fr"):
        for r in load_split(name, "train", data_dir=data_dir()).table.to_pylist():
            if len(fmt.prompt_ids(r["prompt"])) + len(fmt.response_ids(r["response"])) >= seq_len:
                out.append(r | {"task": name})
                if len(out) == n:
                    return out
    raise SystemExit(f"only {len(out)} rows reach {seq_len} tokens; lower --seq-len")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--probe", type=int, default=8, help="probe examples decoded in the checkpoint pass")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, tok = load_causal_lm(args.model, device=args.device)
    load_s = time.perf_counter() - t0
    rows = long_rows(tok, args.batch_size * args.steps, args.seq_len)
    lora = {"r": 8, "alpha": 16, "dropout": 0.0} if args.lora else None
    common = {"tokenizer": tok, "batch_size": args.batch_size, "lr": 1e-5, "max_length": args.seq_len,
              "dtype": args.dtype, "progress": False, "lora": lora}
    if args.warmup:
        train_sft(model, rows[: args.batch_size * args.warmup], max_steps=args.warmup, **common)
        if args.lora:  # the warm-up merged its adapters: start again from the base weights
            model, tok = load_causal_lm(args.model, device=args.device)
            common["tokenizer"] = tok
    with tempfile.TemporaryDirectory() as tmp:
        res = train_sft(model, rows, Path(tmp) / "run", max_steps=args.steps, checkpoint_every=args.steps,
                        probe=args.probe, probe_max_new_tokens=args.max_new_tokens, **common)
    steps = res.step_seconds
    ckpt_s = res.history[-1]["checkpoint_seconds"]
    out = {
        "benchmark": "bench_sft",
        "model": args.model, "device": str(next(res.model.parameters()).device), "dtype": args.dtype,
        "lora": args.lora, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "seq_len": args.seq_len, "steps": len(steps),
        "tokens_per_step": res.train_tokens / len(steps),
        "response_tokens_per_step": res.response_tokens / len(steps),
        "step_seconds_median": round(statistics.median(steps), 3),
        "step_seconds_mean": round(statistics.mean(steps), 3),
        "step_seconds": [round(s, 3) for s in steps],
        "tokens_per_second": round(res.train_tokens / res.train_seconds, 1),
        "response_tokens_per_second": round(res.response_tokens / res.train_seconds, 1),
        "checkpoint_seconds": round(ckpt_s, 2),
        "checkpoint": {"teacher_forced_examples": len(rows), "probe_examples": args.probe,
                       "probe_max_new_tokens": args.max_new_tokens},
        "model_load_seconds": round(load_s, 2),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
