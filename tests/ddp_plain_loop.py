"""A plain PyTorch DDP training loop recording train-pass dynamics with :class:`soi.record.DynamicsRecorder`.

Run on CPU with the gloo backend, one process per rank::

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_plain_loop.py --out RUN [--drop-last]
    python tests/ddp_plain_loop.py --out RUN          # single process (world size 1), same data and model

A linear classifier over fixed random features (identical on every rank: everything is seeded) trains with a
``DistributedSampler``. With N not divisible by the world size the sampler pads with duplicates (dropped by the
recorder); with ``--drop-last`` the sampler and the loader drop examples, which ``fill`` (a no-grad forward
pass) records. Used by ``tests/test_ddp_plain.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from soi.record import DynamicsRecorder
from soi.store import RunMeta, examples_table

LABELS = ["neg", "neu", "pos"]


def make_data(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed features and labels (a noisy linear rule), the same in every process."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, len(LABELS), generator=g)
    y = (x @ w + 0.5 * torch.randn(n, len(LABELS), generator=g)).argmax(dim=1)
    return x, y


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="run directory to write")
    ap.add_argument("--examples", type=int, default=51, help="N (not a multiple of world size x batch)")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--drop-last", action="store_true", help="drop_last in sampler and loader; gaps filled by fill")
    args = ap.parse_args(argv)

    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.manual_seed(args.seed)

    x, y = make_data(args.examples, args.dim, args.seed)
    model = nn.Linear(args.dim, len(LABELS))  # same init everywhere (seeded); DDP also broadcasts rank 0's
    ddp = DistributedDataParallel(model) if distributed else model
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr)
    loader = DataLoader(
        TensorDataset(torch.arange(args.examples), x, y), batch_size=args.batch, drop_last=args.drop_last,
        sampler=DistributedSampler(range(args.examples), num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                   drop_last=args.drop_last),
    )
    examples = examples_table([f"toy-{i}" for i in range(args.examples)], y.numpy(), task="toy")
    meta = RunMeta(tasks={"toy": LABELS}, model="linear", setting="ddp-plain", seed=args.seed,
                   extra={"world_size": world, "drop_last": args.drop_last, "lr": args.lr})
    rec = DynamicsRecorder(args.out, meta, examples=examples)  # rank, world size from torch.distributed

    @torch.no_grad()
    def fill(missing: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.from_numpy(missing)
        return model(x[ids]), y[ids]

    step, rows = 0, 0
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for ids, xb, yb in loader:
            logits = ddp(xb)
            rec.update(ids, logits, yb)  # train pass: the logits of this step's forward, before the update
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            rows += ids.numel()
        rec.end_checkpoint(step=step, fill=fill if args.drop_last else None)
    print(f"rank {rank}/{world}: {step} steps, {rows} rows seen", flush=True)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
