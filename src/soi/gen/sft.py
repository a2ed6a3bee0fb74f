"""Causal-LM supervised fine-tuning (SFT) with per-example generative training dynamics: the reference loop.

``soi run`` generative studies train through TRL (:func:`soi.train.sft.train_sft_trl`, recording with
:class:`soi.record.SoiSFTTrainer`). :func:`train_sft` below is soi's own single-process loop, kept as the documented
reference the tests compare with (eval-pass dynamics at each checkpoint) and for quick experiments; the formatting,
collation and :func:`generate` pieces are shared by both engines.

Public API (stable; see ``docs/generative.md``)::

    GenExample(id, prompt, response, task="default", language="und", source=None, answer=None)
    PromptFormat(tokenizer, chat_template=None)         # prompt/response -> token ids, labels, stop tokens
    train_sft(model, train, run_dir=None, *, tokenizer=None, validation=None, epochs=None, max_steps=None,
              batch_size=8, lr=1e-4, warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, max_length=512,
              checkpoint_every=50, seed=0, lora=None, dtype="auto", device=None, select_best=True,
              probe=32, probe_seed=0, probe_max_new_tokens=128, correct_threshold=0.5, eval_batch_size=None,
              model_name=None, setting=None, meta_extra=None, progress=True) -> SFTResult
    generate(model, tokenizer, prompts, *, max_new_tokens=128, batch_size=8, max_length=None,
             dtype="auto", progress=False) -> list[str]
    load_causal_lm(name, *, dtype="auto", device=None) -> (model, tokenizer)     # from soi.model.causal

Formatting: with a chat template (the tokenizer's, when it has one) the prompt is the rendered user turn plus the
generation prompt, tokenized without extra special tokens (as ``apply_chat_template`` does); the response is the
assistant text followed by the token that closes an assistant turn in that template (``<|im_end|>``,
``<end_of_turn>``, else EOS). Without a template: ``prompt + "\\n\\n"`` (with the tokenizer's own BOS handling),
then ``response`` + EOS. Prompt and response are tokenized separately, exactly as :func:`generate` sees them.
Labels are ``-100`` on prompt and padding tokens: the loss is the mean cross-entropy over the response tokens of
the batch (closing token included), in float32 from the final hidden states of the response positions only.

Training: length-grouped batches (a seeded permutation cut into groups of 64 batches, each group sorted by length;
every example once per epoch, batch order shuffled), AdamW, constant learning rate after an optional linear warmup,
gradient clipping, a checkpoint every ``checkpoint_every`` optimizer steps and at the last step: validation loss,
the best checkpoint by validation loss (trainable weights kept in CPU memory, restored at the end), and, with a
``run_dir``, per-example dynamics in the soi store (:mod:`soi.gen.record`). bf16 autocast on CUDA
(``dtype="auto"``), float32 on CPU; seeded and reproducible on CPU. LoRA via PEFT with ``lora={r, alpha, dropout,
target_modules}`` (merged into the returned model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soi.errors import SoiError
from soi.model.causal import load_causal_lm

__all__ = ["GenExample", "PromptFormat", "SFTResult", "collate", "generate", "generate_ids",
           "length_grouped_batches", "load_causal_lm", "train_sft"]

IGNORE = -100
GROUP_BATCHES = 64
_SENTINEL = "soi-sentinel-7c1e"


# ------------------------------------------------------------------------------------------------ examples
@dataclass(frozen=True)
class GenExample:
    """One prompt/response pair (the canonical generative row of ``shared/data``, plus its task)."""

    id: str
    prompt: str
    response: str
    task: str = "default"
    language: str = "und"
    source: str | None = None
    answer: str | None = None  # final answer (math: the number) used to judge greedy generations


def as_examples(rows: Any, *, where: str = "train") -> list[GenExample]:
    """``GenExample`` list from GenExamples, mappings (``id``/``example_id``, ``prompt``, ``response``, ``task``,
    ``language``, ``source``, ``answer``) or a ``pyarrow.Table`` with those columns."""
    if rows is None:
        return []
    if hasattr(rows, "to_pylist") and hasattr(rows, "column_names"):
        rows = rows.to_pylist()
    out: list[GenExample] = []
    for i, r in enumerate(rows):
        if isinstance(r, GenExample):
            out.append(r)
            continue
        if not isinstance(r, Mapping):
            raise SoiError(f"{where}[{i}]: expected a GenExample or a mapping, got {type(r).__name__}")
        prompt, response = r.get("prompt"), r.get("response")
        if not isinstance(prompt, str) or not prompt:
            raise SoiError(f"{where}[{i}]: field 'prompt' must be a non-empty string")
        if not isinstance(response, str):
            raise SoiError(f"{where}[{i}]: field 'response' must be a string")
        rid = r.get("id", r.get("example_id"))
        answer = r.get("answer")
        out.append(GenExample(id=str(i) if rid is None else str(rid), prompt=prompt, response=response,
                              task=str(r.get("task") or "default"), language=str(r.get("language") or "und"),
                              source=r.get("source"), answer=None if answer is None else str(answer)))
    return out


# ---------------------------------------------------------------------------------------------- formatting
class PromptFormat:
    """How a prompt and a response become token ids (see the module docstring).

    Parameters
    ----------
    tokenizer : a Hugging Face tokenizer
    chat_template : ``None`` = use the tokenizer's chat template when it has one; ``False`` = plain
        ``"prompt\\n\\nresponse"`` format; ``True`` = require a template
    """

    def __init__(self, tokenizer: Any, chat_template: bool | None = None) -> None:
        self.tokenizer = tokenizer
        has = bool(getattr(tokenizer, "chat_template", None))
        if chat_template and not has:
            raise SoiError("chat_template=True but the tokenizer has no chat template")
        self.chat = has if chat_template is None else bool(chat_template)
        eos = tokenizer.eos_token_id
        self.end_id = self._turn_end() if self.chat else eos
        if self.end_id is None:
            raise SoiError("the tokenizer has no EOS token: cannot mark the end of a response")
        self.stop_ids = sorted({int(self.end_id)} | ({int(eos)} if eos is not None else set()))
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (eos if eos is not None else 0))

    def _turn_end(self) -> int | None:
        """The special token the template puts right after an assistant message, else EOS."""
        tok = self.tokenizer
        try:
            full = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant",
                                            "content": _SENTINEL}], tokenize=False)
        except Exception:  # templates may reject an assistant turn; jinja raises many types
            return tok.eos_token_id
        pos = full.rfind(_SENTINEL)
        rest = full[pos + len(_SENTINEL):] if pos >= 0 else ""
        ids = tok(rest, add_special_tokens=False)["input_ids"] if rest else []
        added = getattr(tok, "added_tokens_decoder", {}) or {}
        if ids and ids[0] in added and getattr(added[ids[0]], "special", False):
            return int(ids[0])
        return tok.eos_token_id

    def prompt_text(self, prompt: str) -> str:
        if self.chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt + "\n\n"

    def prompt_ids(self, prompt: str) -> list[int]:
        return list(self.tokenizer(self.prompt_text(prompt), add_special_tokens=not self.chat)["input_ids"])

    def response_ids(self, response: str) -> list[int]:
        return [*self.tokenizer(response, add_special_tokens=False)["input_ids"], int(self.end_id)]

    def encode(self, prompt: str, response: str, max_length: int) -> tuple[list[int], int, bool]:
        """``(ids, n_prompt, truncated)``; over ``max_length`` the prompt keeps its end (at most
        ``max_length - min(len(response), max_length // 2)`` tokens) and the response its start."""
        p, r = self.prompt_ids(prompt), self.response_ids(response)
        if len(p) + len(r) <= max_length:
            return p + r, len(p), False
        keep_p = min(len(p), max_length - min(len(r), max_length // 2))
        p = p[len(p) - keep_p:]
        return p + r[: max_length - keep_p], keep_p, True


@dataclass
class Encoded:
    """Tokenized examples: ``ids[i]`` = prompt + response tokens, the first ``n_prompt[i]`` are the prompt."""

    ids: list[list[int]]
    n_prompt: np.ndarray
    truncated: int = 0

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), np.int64, len(self.ids))

    @property
    def n_response(self) -> np.ndarray:
        return self.lengths - self.n_prompt


def encode_examples(fmt: PromptFormat, examples: Sequence[GenExample], max_length: int) -> Encoded:
    ids, n_prompt, truncated = [], [], 0
    for ex in examples:
        x, n, cut = fmt.encode(ex.prompt, ex.response, max_length)
        ids.append(x)
        n_prompt.append(n)
        truncated += cut
    return Encoded(ids, np.asarray(n_prompt, np.int64), truncated)


# ------------------------------------------------------------------------------------------------ batching
def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *,
                           group_batches: int = GROUP_BATCHES) -> list[np.ndarray]:
    """One epoch of batches: a permutation cut into groups of ``group_batches`` batches, each group sorted by
    length (longest first) and cut into batches; the batch order is then shuffled. Every index appears once."""
    n = len(lengths)
    perm = rng.permutation(n)
    size = batch_size * group_batches
    batches: list[np.ndarray] = []
    for start in range(0, n, size):
        group = perm[start:start + size]
        group = group[np.argsort(-np.asarray(lengths)[group], kind="stable")]
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(enc: Encoded, rows: Sequence[int] | np.ndarray, pad_id: int, *, padding_side: str = "right",
            device: Any = "cpu") -> dict[str, Any]:
    """Padded batch: ``input_ids``, ``attention_mask``, ``position_ids`` (from the mask, so left and right padding
    give the same positions) and ``labels`` (``-100`` on prompt and padding tokens)."""
    import torch

    if padding_side not in ("left", "right"):
        raise SoiError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    seqs = [enc.ids[int(i)] for i in rows]
    t = max(len(s) for s in seqs)
    ids = np.full((len(seqs), t), pad_id, np.int64)
    mask = np.zeros((len(seqs), t), np.int64)
    labels = np.full((len(seqs), t), IGNORE, np.int64)
    for b, (row, s) in enumerate(zip(rows, seqs, strict=True)):
        start = 0 if padding_side == "right" else t - len(s)
        ids[b, start:start + len(s)] = s
        mask[b, start:start + len(s)] = 1
        n_p = int(enc.n_prompt[int(row)])
        labels[b, start + n_p:start + len(s)] = s[n_p:]
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return {k: torch.from_numpy(v).to(device) for k, v in
            {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "labels": labels}.items()}


# ------------------------------------------------------------------------------------------- model pieces
def model_device(model: Any) -> Any:
    return next(model.parameters()).device


def autocast_for(model: Any, dtype: str = "auto") -> Any:
    """bf16 autocast on CUDA for ``dtype`` ``"auto"``/``"bfloat16"``; ``"bfloat16"`` also on CPU; else off."""
    import torch

    if dtype not in ("auto", "float32", "bfloat16"):
        raise SoiError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    kind = model_device(model).type
    on = dtype == "bfloat16" or (dtype == "auto" and kind == "cuda")
    return torch.autocast(kind, dtype=torch.bfloat16) if on else nullcontext()


def response_hidden(model: Any, batch: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """``(h, targets, rows)``: final hidden states at the positions that predict a response token (N, H), those
    tokens (N,) and their batch rows (N,). Falls back to full logits (N, V) when the model has no decoder/head."""
    import torch

    labels = batch["labels"]
    sel = labels[:, 1:] != IGNORE
    targets = labels[:, 1:][sel]
    rows = torch.nonzero(sel, as_tuple=True)[0]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    decoder = getattr(model, "get_decoder", lambda: None)()
    if decoder is not None and model.get_output_embeddings() is not None:
        h = decoder(**inputs).last_hidden_state
    else:  # pragma: no cover - models without the decoder/head split
        h = model(**inputs).logits
    return h[:, :-1][sel], targets, rows


def head_logits(model: Any, h: Any) -> Any:
    """float32 logits of hidden states ``h`` (N, H) (final-logit soft-capping as the model's forward does)."""
    import torch

    head = model.get_output_embeddings()
    if head is None:  # pragma: no cover - response_hidden returned logits already
        return h.float()
    z = head(h).float()
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    return torch.tanh(z / cap) * cap if cap else z


def sft_loss(model: Any, batch: Mapping[str, Any]) -> tuple[Any, int]:
    """Mean cross-entropy over the response tokens of a batch, and their number."""
    import torch

    h, targets, _ = response_hidden(model, batch)
    z = head_logits(model, h)
    n = int(targets.numel())
    return torch.nn.functional.cross_entropy(z, targets, reduction="sum") / max(n, 1), n


# ------------------------------------------------------------------------------------------------ generate
@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _progress(total: int, label: str, enabled: bool) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    return bar, bar.add_task(label, total=total)


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 128,
             batch_size: int = 8, max_length: int | None = None, dtype: str = "auto", progress: bool = False,
             fmt: PromptFormat | None = None) -> list[str]:
    """Greedy completions of ``prompts`` (formatted as in training), in input order.

    Batches of similar length, left padding, stop at the response-closing token or EOS; prompts longer than
    ``max_length`` keep their last tokens. Special tokens are dropped and whitespace stripped from the output.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise SoiError("generate: batch_size and max_new_tokens must be >= 1")
    fmt = fmt or PromptFormat(tokenizer)
    ids = [fmt.prompt_ids(p) for p in prompts]
    if max_length is not None:
        ids = [x[-max_length:] for x in ids]
    return generate_ids(model, tokenizer, ids, stop_ids=fmt.stop_ids, pad_id=fmt.pad_id,
                        max_new_tokens=max_new_tokens, batch_size=batch_size, dtype=dtype, progress=progress)


def generate_ids(model: Any, tokenizer: Any, ids: Sequence[Sequence[int]], *, stop_ids: Sequence[int], pad_id: int,
                 max_new_tokens: int = 128, batch_size: int = 8, dtype: str = "auto",
                 progress: bool = False) -> list[str]:
    """Greedy completions of tokenized prompts ``ids`` (in input order): batches of similar length, left padding,
    stop at any of ``stop_ids``; special tokens dropped and whitespace stripped from the decoded text."""
    import torch
    from transformers import GenerationConfig

    if batch_size < 1 or max_new_tokens < 1:
        raise SoiError("generate: batch_size and max_new_tokens must be >= 1")
    stop_ids = [int(x) for x in stop_ids]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=stop_ids, pad_token_id=pad_id)
    device = model_device(model)
    out: list[str] = [""] * len(ids)
    bar, task = _progress(len(ids), "generate", progress)
    try:
        with _eval_mode(model), torch.inference_mode(), autocast_for(model, dtype):
            for start in range(0, len(ids), batch_size):
                rows = order[start:start + batch_size]
                t = max(len(ids[i]) for i in rows)
                x = torch.full((len(rows), t), pad_id, dtype=torch.long)
                m = torch.zeros((len(rows), t), dtype=torch.long)
                for b, i in enumerate(rows):
                    x[b, t - len(ids[i]):] = torch.tensor(list(ids[i]))
                    m[b, t - len(ids[i]):] = 1
                gen = model.generate(input_ids=x.to(device), attention_mask=m.to(device), generation_config=config)
                new = gen[:, t:].tolist()
                for b, i in enumerate(rows):
                    toks = new[b]
                    cut = next((k for k, tok in enumerate(toks) if tok in stop_ids), len(toks))
                    out[i] = tokenizer.decode(toks[:cut], skip_special_tokens=True).strip()
                if bar is not None:
                    bar.advance(task, len(rows))
    finally:
        if bar is not None:
            bar.stop()
    return out


# ------------------------------------------------------------------------------------------------ training
@dataclass
class SFTResult:
    """What :func:`train_sft` returns; ``model`` holds the best checkpoint's weights (or the last's)."""

    model: Any
    tokenizer: Any
    steps: int = 0
    best_step: int | None = None
    validation_loss: dict[int, float] = field(default_factory=dict)  # step -> mean token NLL on validation
    train_loss: list[float] = field(default_factory=list)  # mean token NLL per checkpoint interval
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per checkpoint
    train_tokens: int = 0  # non-padding tokens (prompt + response) in the training forward passes
    response_tokens: int = 0  # tokens carrying a loss
    train_seconds: float = 0.0  # optimizer steps only (no checkpoint passes)
    step_seconds: list[float] = field(default_factory=list)  # wall time of each optimizer step
    seconds: float = 0.0
    n_truncated: int = 0
    run_dir: Path | None = None
    probe_dir: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0


def _apply_lora(model: Any, lora: Mapping[str, Any]) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise SoiError("lora needs the peft package: pip install 'soi[gen]'") from None
    unknown = sorted(set(lora) - {"r", "alpha", "dropout", "target_modules"})
    if unknown:
        raise SoiError(f"lora: unknown field(s) {unknown}; allowed: r, alpha, dropout, target_modules")
    cfg = LoraConfig(r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 16)),
                     lora_dropout=float(lora.get("dropout", 0.05)),
                     target_modules=lora.get("target_modules") or "all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def _check_args(**kw: Any) -> None:
    for name in ("batch_size", "max_length", "checkpoint_every"):
        if not isinstance(kw[name], int) or kw[name] < 1:
            raise SoiError(f"train_sft: {name} must be a positive integer, got {kw[name]!r}")
    for name in ("epochs", "max_steps"):
        if kw[name] is not None and (not isinstance(kw[name], int) or kw[name] < 1):
            raise SoiError(f"train_sft: {name} must be a positive integer or None, got {kw[name]!r}")
    if not kw["lr"] > 0:
        raise SoiError(f"train_sft: lr must be > 0, got {kw['lr']!r}")
    if kw["warmup_steps"] < 0:
        raise SoiError(f"train_sft: warmup_steps must be >= 0, got {kw['warmup_steps']!r}")
    if not 0 <= kw["correct_threshold"] <= 1:
        raise SoiError(f"train_sft: correct_threshold must be in [0, 1], got {kw['correct_threshold']!r}")


def train_sft(
    model: Any,
    train: Any,
    run_dir: str | Path | None = None,
    *,
    tokenizer: Any = None,
    validation: Any = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int = 8,
    lr: float = 1e-4,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    max_length: int = 512,
    checkpoint_every: int = 50,
    seed: int = 0,
    lora: Mapping[str, Any] | None = None,
    dtype: str = "auto",
    device: str | None = None,
    select_best: bool = True,
    probe: int | float | None = 32,
    probe_seed: int = 0,
    probe_max_new_tokens: int = 128,
    correct_threshold: float = 0.5,
    eval_batch_size: int | None = None,
    chat_template: bool | None = None,
    model_name: str | None = None,
    setting: str | None = None,
    meta_extra: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> SFTResult:
    """Fine-tune a causal LM on prompt/response pairs, recording per-example dynamics into ``run_dir``.

    Parameters
    ----------
    model : an alias / hub id / local path (loaded with :func:`load_causal_lm`) or a loaded model (then pass
        ``tokenizer``)
    train, validation : ``GenExample``s, row mappings or a ``pyarrow.Table`` (see :func:`as_examples`)
    run_dir : soi run directory for the dynamics (``None``: none recorded); see :mod:`soi.gen.record`
    epochs, max_steps : passes over ``train`` and/or a cap on optimizer steps (default one epoch)
    warmup_steps : linear warmup from 0, then the constant ``lr``
    checkpoint_every : optimizer steps between checkpoints (one more at the last step)
    dtype : ``"auto"`` (bf16 autocast on CUDA, float32 on CPU), ``"float32"`` or ``"bfloat16"`` (autocast)
    select_best : restore the checkpoint with the lowest validation loss at the end (needs ``validation``)
    probe : greedy-decoding probe subset of ``train`` scored at each checkpoint (count, fraction, or None/0)
    correct_threshold : a training example counts as ``correct`` at a checkpoint when its teacher-forced token
        accuracy is at least this (the probe run uses answer correctness instead)
    """
    import torch

    _check_args(batch_size=batch_size, max_length=max_length, checkpoint_every=checkpoint_every, epochs=epochs,
                max_steps=max_steps, lr=lr, warmup_steps=warmup_steps, correct_threshold=correct_threshold)
    t_start = time.perf_counter()
    train_ex = as_examples(train, where="train")
    val_ex = as_examples(validation, where="validation")
    if not train_ex:
        raise SoiError("train_sft: no training examples")
    if isinstance(model, str | Path):
        model_name = model_name or str(model)
        model, tokenizer = load_causal_lm(str(model), device=device)
    elif tokenizer is None:
        raise SoiError("train_sft: pass tokenizer= with a loaded model")
    elif device not in (None, "auto"):
        model = model.to(device)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    dev = model_device(model)
    fmt = PromptFormat(tokenizer, chat_template=chat_template)
    enc = encode_examples(fmt, train_ex, max_length)
    val_enc = encode_examples(fmt, val_ex, max_length) if val_ex else None
    eval_bs = eval_batch_size or 2 * batch_size

    recorder = None
    if run_dir is not None:
        from soi.gen.record import GenRunRecorder

        recorder = GenRunRecorder(
            run_dir, train_ex, probe=probe, probe_seed=probe_seed, correct_threshold=correct_threshold,
            model_name=model_name or getattr(getattr(model, "config", None), "name_or_path", None),
            setting=setting, seed=seed, extra={
                "recorder": "soi.gen.sft.train_sft",
                "sft": {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr,
                        "warmup_steps": warmup_steps, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm,
                        "max_length": max_length, "checkpoint_every": checkpoint_every, "lora": dict(lora or {}),
                        "dtype": dtype, "chat_template": fmt.chat, "n_train": len(train_ex),
                        "n_validation": len(val_ex), "truncated": enc.truncated,
                        "probe_max_new_tokens": probe_max_new_tokens},
                **dict(meta_extra or {})})

    torch.manual_seed(seed)
    if lora is not None:
        model = _apply_lora(model, lora)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0)
    rng = np.random.default_rng(seed)
    per_epoch = math.ceil(len(train_ex) / batch_size)
    total = per_epoch * (epochs or (1 if max_steps is None else math.ceil(max_steps / per_epoch)))
    total = min(total, max_steps) if max_steps is not None else total

    res = SFTResult(model=model, tokenizer=tokenizer, n_truncated=enc.truncated,
                    run_dir=None if recorder is None else recorder.run_dir,
                    probe_dir=None if recorder is None else recorder.probe_dir)
    best: dict[str, Any] | None = None
    best_loss = math.inf
    bar, bar_task = _progress(total, "sft", progress)
    loss_sum = torch.zeros((), device=dev)
    loss_tokens = 0
    lengths = enc.lengths
    model.train()
    try:
        epoch = 0
        while res.steps < total:
            for rows in length_grouped_batches(lengths, batch_size, rng):
                t0 = time.perf_counter()
                batch = collate(enc, rows, fmt.pad_id, device=dev)
                with autocast_for(model, dtype):
                    loss, n_tok = sft_loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_([p for _, p in trainable], max_grad_norm)
                optimizer.step()
                last_lr = float(optimizer.param_groups[0]["lr"])
                scheduler.step()
                res.steps += 1
                loss_sum += loss.detach() * n_tok
                loss_tokens += n_tok
                res.response_tokens += n_tok
                res.train_tokens += int(lengths[rows].sum())
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                res.step_seconds.append(time.perf_counter() - t0)
                res.train_seconds += res.step_seconds[-1]
                if bar is not None:
                    bar.advance(bar_task)
                if res.steps % checkpoint_every == 0 or res.steps == total:
                    entry = _checkpoint(model, tokenizer, fmt, enc, val_enc, recorder, res, dtype=dtype,
                                        eval_bs=eval_bs, epoch=epoch + 1, probe_max_new_tokens=probe_max_new_tokens,
                                        train_loss=float(loss_sum) / max(loss_tokens, 1), lr=last_lr)
                    loss_sum.zero_()
                    loss_tokens = 0
                    vl = entry.get("validation_loss")
                    if vl is not None and select_best and vl < best_loss:
                        best_loss = vl
                        res.best_step = res.steps
                        best = {n: p.detach().to("cpu", copy=True) for n, p in trainable}
                    if recorder is not None:
                        recorder.save_history(res.history, res.best_step)
                if res.steps >= total:
                    break
            epoch += 1
    finally:
        if bar is not None:
            bar.stop()
    if best is not None and res.best_step != res.steps:
        with torch.no_grad():
            for n, p in trainable:
                p.copy_(best[n].to(p.device))
    if res.best_step is None:
        res.best_step = res.steps if not (select_best and val_enc) else None
    if lora is not None:
        model = model.merge_and_unload()
    model.eval()
    res.model = model
    res.seconds = time.perf_counter() - t_start
    if recorder is not None:
        recorder.save_history(res.history, res.best_step, final={
            "steps": res.steps, "train_tokens": res.train_tokens, "response_tokens": res.response_tokens,
            "train_seconds": round(res.train_seconds, 3), "seconds": round(res.seconds, 3),
            "tokens_per_second": round(res.tokens_per_second, 1)})
    return res


def _checkpoint(model: Any, tokenizer: Any, fmt: PromptFormat, enc: Encoded, val_enc: Encoded | None,
                recorder: Any, res: SFTResult, *, dtype: str, eval_bs: int, epoch: int, probe_max_new_tokens: int,
                train_loss: float, lr: float) -> dict[str, Any]:
    """Validation loss, dynamics (teacher-forced pass + probe generations) and the history entry of one checkpoint."""
    from soi.gen.record import score_sequences

    t0 = time.perf_counter()
    entry: dict[str, Any] = {"checkpoint": len(res.history), "step": res.steps, "epoch": epoch,
                             "train_loss": train_loss, "lr": lr}
    with _eval_mode(model):
        if val_enc is not None:
            stats = score_sequences(model, val_enc, fmt.pad_id, batch_size=eval_bs, dtype=dtype)
            vl = float(-stats["logp"].astype(np.float64).sum() / stats["n_tokens"].sum())
            entry["validation_loss"] = vl
            res.validation_loss[res.steps] = vl
        if recorder is not None:
            recorder.record(model, tokenizer, fmt, enc, step=res.steps, batch_size=eval_bs, dtype=dtype,
                            max_new_tokens=probe_max_new_tokens)
    entry["checkpoint_seconds"] = round(time.perf_counter() - t0, 3)
    res.train_loss.append(train_loss)
    res.history.append(entry)
    return entry
