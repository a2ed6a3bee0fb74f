"""A shared encoder with one linear classification head per task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from soi.errors import SoiError

Pooling = Literal["cls", "mean"]


def _head_key(task: str) -> str:
    """``nn.ModuleDict`` keys may not contain dots."""
    return task.replace(".", "_")


class MultiHeadClassifier(nn.Module):
    """A shared encoder (an HF ``AutoModel`` or any module returning ``last_hidden_state``) + one head per task.

    Multi-task runs have one head per task; multi-source and multi-lingual runs use ONE task name (one head)
    over several datasets.

    Parameters
    ----------
    encoder : a path / hub id (loaded with ``AutoModel.from_pretrained``) or a module whose output has
        ``last_hidden_state`` (B, T, H) and whose ``config.hidden_size`` is H
    heads : ``{task: number of labels}``
    pooling : ``"cls"`` (first token) or ``"mean"`` (attention-masked mean)
    dropout : dropout before each head
    freeze_embeddings : keep the encoder's input (word) embeddings fixed. For multilingual encoders with large
        vocabularies (multilingual-e5-small: 96M of its 118M parameters) this makes a CPU step ~3x faster, and
        it keeps the embeddings of languages absent from the training data where pre-training put them.
    """

    def __init__(self, encoder: str | nn.Module, heads: Mapping[str, int], *, pooling: Pooling = "cls",
                 dropout: float = 0.1, freeze_embeddings: bool = False) -> None:
        super().__init__()
        if isinstance(encoder, str):
            from transformers import AutoModel

            encoder = AutoModel.from_pretrained(encoder)
        if not heads:
            raise SoiError("MultiHeadClassifier needs at least one head ({task: num_labels})")
        if pooling not in ("cls", "mean"):
            raise SoiError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        keys = [_head_key(t) for t in heads]
        if len(set(keys)) != len(keys):
            raise SoiError(f"task names collide once dots are replaced: {list(heads)}")
        self.encoder = encoder
        if freeze_embeddings:
            encoder.get_input_embeddings().weight.requires_grad_(False)
        self.pooling = pooling
        self.num_labels = {str(t): int(n) for t, n in heads.items()}
        hidden = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({_head_key(t): nn.Linear(hidden, int(n)) for t, n in heads.items()})

    @property
    def tasks(self) -> list[str]:
        return list(self.num_labels)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, H) by the configured pooling."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def cap_length(self, max_length: int) -> int:
        """``max_length`` capped at the encoder's position limit (``config.max_position_embeddings``)."""
        limit = getattr(getattr(self.encoder, "config", None), "max_position_embeddings", None)
        return min(int(max_length), int(limit)) if isinstance(limit, int) and limit > 0 else int(max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, *, task: str) -> torch.Tensor:
        """Logits (B, num_labels[task]) of ``task``'s head."""
        if task not in self.num_labels:
            raise SoiError(f"no head for task {task!r}; heads: {self.tasks}")
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(**kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.heads[_head_key(task)](self.dropout(self.pool(hidden, attention_mask)))


__all__ = ["MultiHeadClassifier", "Pooling"]
