"""Benchmark: :class:`soi.record.SoiSFTTrainer` vs a plain ``trl.SFTTrainer``, side by side in one process.

Same model (SmolLM2-135M by default, full fine-tuning, float32 on CPU / bf16 on CUDA), same pre-tokenized batches
(GSM8K training pairs formatted by :class:`soi.gen.sft.PromptFormat`, each truncated to exactly ``--seq-len``
tokens), same seed and SFTConfig (constant LR, no checkpoints, no logging). ``--rounds`` rounds alternate the order
(plain, soi / soi, plain); each trainer starts from the same initial weights and trains ``--steps`` optimizer steps.
The step time is the wall time from ``on_step_begin`` to ``on_step_end`` (forward, backward, optimizer; the first
step of every run is a warm-up and not counted; on CUDA each step ends with a synchronize); SoiSFTTrainer's one
checkpoint (the fill pass over the examples not trained since, and the parquet part) runs after the last timed step
and is reported separately. Reported: median step time per trainer, the ratio soi / plain (target <= 1.05 on CPU)
overall and per round (adjacent runs, less exposed to a drifting machine load), tokens per second, the load.

``--mode head`` isolates the part soi changes: one forward + backward of the same batch (half prompt, half
completion labels) through TRL's fused LM-head forward and through soi's recording forward, alternating, ``--reps``
times each, same model weights.

Prints one JSON object. Usage::

    python benchmarks/bench_sft_trl.py                       # CPU, 1 thread, batch 4 x 128 tokens, 3 rounds
    python benchmarks/bench_sft_trl.py --mode head --reps 5  # forward + backward only, alternating
    python benchmarks/bench_sft_trl.py --device cuda --batch-size 16 --seq-len 512
"""

from __future__ import annotations

import argparse
import contextlib
import copy
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
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> str:
    return os.environ.get("SOI_DATA_DIR") or str(REPO.parent / "shared" / "data")


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (on_step_begin -> on_step_end; synchronized on CUDA)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is a warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--mode", default="trainer", choices=["trainer", "head"])
    ap.add_argument("--reps", type=int, default=5, help="--mode head: forward + backward repetitions per side")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "head":
        return head_benchmark(args)

    from trl import SFTConfig, SFTTrainer

    from soi.data import load_split
    from soi.gen.sft import GenExample, PromptFormat
    from soi.model.causal import load_causal_lm
    from soi.record import SoiRecording, SoiSFTTrainer
    from soi.train.sft import sft_dataset

    cuda = torch.cuda.is_available() and args.device != "cpu"
    t0 = time.perf_counter()
    base, tok = load_causal_lm(args.model, device="cuda" if cuda else "cpu")
    load_s = time.perf_counter() - t0
    fmt = PromptFormat(tok)
    need = args.batch_size * args.steps
    rows = []
    for r in load_split("gsm8k", "train", data_dir=data_dir()).table.to_pylist():
        if len(fmt.prompt_ids(r["prompt"])) + len(fmt.response_ids(r["response"])) >= args.seq_len and \
                len(fmt.prompt_ids(r["prompt"])) < args.seq_len - 16:
            rows.append(GenExample(id=str(r["id"]), prompt=r["prompt"], response=r["response"], task="math"))
            if len(rows) == need:
                break
    ds = sft_dataset(fmt, rows, args.seq_len)
    times: dict[str, list[float]] = {"plain": [], "soi": []}
    per_round: list[dict[str, float]] = []
    checkpoint_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            per_round.append({})
            for kind in (("plain", "soi") if r % 2 == 0 else ("soi", "plain")):
                model = copy.deepcopy(base)  # fresh weights, and a forward not yet patched by a trainer
                timer = StepTimer()
                config = SFTConfig(output_dir=f"{tmp}/{kind}-{r}", max_steps=args.steps, learning_rate=1e-5,
                                   lr_scheduler_type="constant", per_device_train_batch_size=args.batch_size,
                                   seed=0, save_strategy="no", logging_strategy="no", report_to=[],
                                   disable_tqdm=True, bf16=cuda, use_cpu=not cuda, gradient_checkpointing=False,
                                   max_length=args.seq_len, dataloader_num_workers=0)
                common = {"model": model, "args": config, "train_dataset": ds, "processing_class": tok,
                          "callbacks": [timer]}
                if kind == "plain":
                    trainer = SFTTrainer(**common)
                else:
                    trainer = SoiSFTTrainer(**common, soi=SoiRecording(f"{tmp}/run-{r}",
                                                                       every_steps=10 * args.steps))
                t1 = time.perf_counter()
                with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its metrics; stdout is JSON
                    trainer.train()
                total = time.perf_counter() - t1
                times[kind] += timer.seconds[1:]
                per_round[-1][kind] = statistics.median(timer.seconds[1:])
                if kind == "soi":
                    checkpoint_s.append(total - sum(timer.seconds))
                del trainer, model
    tokens = args.batch_size * args.seq_len
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "benchmark": "bench_sft_trl", "model": args.model, "device": "cuda" if cuda else "cpu",
        "dtype": "bfloat16" if cuda else "float32", "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "seq_len": args.seq_len, "steps_per_run": args.steps, "rounds": args.rounds,
        "timed_steps": {k: len(v) for k, v in times.items()},
        "step_seconds_median": {k: round(v, 4) for k, v in med.items()},
        "step_seconds": {k: [round(s, 4) for s in v] for k, v in times.items()},
        "ratio_soi_over_plain": round(med["soi"] / med["plain"], 4),
        "ratio_per_round": [round(x["soi"] / x["plain"], 4) for x in per_round],
        "ratio_median_of_rounds": round(statistics.median(x["soi"] / x["plain"] for x in per_round), 4),
        "tokens_per_second": {k: round(tokens / v, 1) for k, v in med.items()},
        "soi_checkpoint_seconds_median": round(statistics.median(checkpoint_s), 3),
        "model_load_seconds": round(load_s, 2),
        "versions": {"torch": torch.__version__, "trl": __import__("trl").__version__,
                     "transformers": __import__("transformers").__version__},
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                    "gpu": torch.cuda.get_device_name() if cuda else None},
    }
    print(json.dumps(out, indent=2))


def head_benchmark(args: argparse.Namespace) -> None:
    """Forward + backward through TRL's fused head vs soi's recording head, alternating (see the docstring)."""
    from trl.trainer.utils import add_fused_lm_head

    from soi.model.causal import load_causal_lm
    from soi.record.sft import install_recording_forward

    cuda = torch.cuda.is_available() and args.device != "cpu"
    dev = "cuda" if cuda else "cpu"
    base, _ = load_causal_lm(args.model, device=dev)
    models = {}
    for kind in ("trl", "soi"):
        m = copy.deepcopy(base)
        add_fused_lm_head(m, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer installs
        if kind == "soi":
            install_recording_forward(m)
        models[kind] = m.train()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (args.batch_size, args.seq_len), generator=gen).to(dev)
    labels = ids.clone()
    labels[:, : args.seq_len // 2] = -100
    extra = {"trl": {}, "soi": {"soi_rows": True}}
    times: dict[str, list[float]] = {"trl": [], "soi": []}
    for r in range(args.reps + 1):
        for kind in (("trl", "soi") if r % 2 == 0 else ("soi", "trl")):
            m = models[kind]
            m.zero_grad(set_to_none=True)
            t = time.perf_counter()
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=cuda):
                out = m(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True,
                        use_cache=False, **extra[kind])
            (-out.log_probs.sum() / out.label_mask.sum()).backward()
            if cuda:
                torch.cuda.synchronize()
            if r:  # the first repetition is a warm-up
                times[kind].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"benchmark": "bench_sft_trl --mode head", "model": args.model, "device": dev,
                      "batch_size": args.batch_size, "seq_len": args.seq_len, "completion_tokens_per_row":
                      args.seq_len - args.seq_len // 2 - 1, "reps": args.reps,
                      "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
                      "seconds_median": {k: round(v, 4) for k, v in med.items()},
                      "ratio_soi_over_trl": round(med["soi"] / med["trl"], 4),
                      "threads": torch.get_num_threads(), "loadavg_1m": round(os.getloadavg()[0], 2)}, indent=2))


if __name__ == "__main__":
    main()
