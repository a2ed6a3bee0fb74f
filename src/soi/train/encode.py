"""Tokenised splits (:class:`Encoded`, tokenised once, unpadded) and right-padded batches of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from soi.data.split import Split
from soi.errors import SoiError


@dataclass
class Encoded:
    """Tokenised rows of one or more splits (unpadded) with their gold label indices."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    gold: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer: Any, splits: Split | Sequence[Split], max_length: int) -> Encoded:
    """Tokenise ``text`` (and ``text_pair`` where present) of the splits' rows once, in row order, truncated."""
    splits = [splits] if isinstance(splits, Split) else list(splits)
    texts: list[str] = []
    pairs: list[str | None] = []
    gold: list[np.ndarray] = []
    for s in splits:
        if s.labels is None:
            raise SoiError(f"{s.name} is a generative dataset: the classifier loop needs labels")
        texts += s.table.column("text").to_pylist()
        pairs += s.table.column("text_pair").to_pylist()
        gold.append(s.gold)
    want_tt = "token_type_ids" in getattr(tokenizer, "model_input_names", ["token_type_ids"])
    ids: list[list[int]] = [[] for _ in texts]
    tts: list[list[int]] = [[] for _ in texts]
    with_pair = [i for i, p in enumerate(pairs) if p is not None]
    single = [i for i, p in enumerate(pairs) if p is None]
    for rows, has_pair in ((single, False), (with_pair, True)):
        if not rows:
            continue
        args = ([texts[i] for i in rows],) + (([pairs[i] for i in rows],) if has_pair else ())
        enc = tokenizer(*args, truncation=True, max_length=max_length, return_token_type_ids=want_tt)
        for k, i in enumerate(rows):
            ids[i] = list(enc["input_ids"][k])
            if want_tt:
                tts[i] = list(enc["token_type_ids"][k])
    g = np.concatenate(gold).astype(np.int64) if gold else np.zeros(0, np.int64)
    return Encoded(ids, tts if want_tt else None, g)


def collate(enc: Encoded, positions: Sequence[int] | np.ndarray, pad_id: int,
            device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad the rows at ``positions``: input_ids, attention_mask, [token_type_ids], labels (tensors)."""
    pos = [int(p) for p in positions]
    width = max(len(enc.input_ids[p]) for p in pos)
    ids = torch.full((len(pos), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pos), width), dtype=torch.long)
    tt = torch.zeros((len(pos), width), dtype=torch.long) if enc.token_type_ids is not None else None
    for r, p in enumerate(pos):
        n = len(enc.input_ids[p])
        ids[r, :n] = torch.tensor(enc.input_ids[p], dtype=torch.long)
        mask[r, :n] = 1
        if tt is not None:
            tt[r, :n] = torch.tensor(enc.token_type_ids[p], dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask, "labels": torch.as_tensor(enc.gold[pos])}
    if tt is not None:
        out["token_type_ids"] = tt
    return {k: v.to(device) for k, v in out.items()}


def pad_id_of(tokenizer: Any) -> int:
    pid = getattr(tokenizer, "pad_token_id", None)
    return int(pid) if pid is not None else 0


__all__ = ["Encoded", "collate", "encode", "pad_id_of"]
