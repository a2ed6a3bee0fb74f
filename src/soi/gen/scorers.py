"""Pluggable response scorers: reference metrics, an OpenAI-compatible LLM judge, a local Hugging Face model.

A scorer is a small object with a ``name`` and ``score(rows, predictions) -> float64 array`` (one score per eval
row; ``rows`` are the mixture's eval rows with ``prompt``, ``response``, ``answer``, ``language``). Scorers that
produce text keep it: :meth:`Scorer.evaluate` returns the scores and, per row, the raw output (the judge's reply,
the reward model's scalar), written next to the score in ``predictions.jsonl`` as ``<name>_raw``.

Registered scorers (:func:`make_scorer` by name; :func:`register_scorer` adds one):

* ``exact_match``, ``rouge_l``, ``chrf``, ``language_fidelity``, ``unparsed``: the reference metrics of
  :mod:`soi.gen.metrics` / :mod:`soi.gen.langid`, wrapped (``chrf`` aggregates at corpus level); ``label_match``:
  the stripped output equals the reference exactly (accuracy of label generation, e.g. intent);
* ``judge``: :class:`OpenAIJudge`, any ``/v1/chat/completions`` endpoint (vLLM, TGI, llama.cpp, a hosted API) with
  the rubric :data:`DEFAULT_RUBRIC` (1-5 rating, as Prometheus, Kim et al. 2024; reply parsed by
  :func:`parse_rating`), cached on disk by request hash, retried with exponential backoff;
* ``reward_model``: :class:`RewardModelScorer`, a local sequence-classification reward model's scalar ``r``
  (``sigmoid(r)`` in [0, 1] by default);
* ``local_judge``: :class:`LocalJudgeScorer`, a local causal LM given the rubric, scored by its probability-weighted
  rating over the tokens ``1``..``5`` (G-Eval, Liu et al. 2023).

:func:`score_rows` / :func:`aggregate_rows` run a :class:`ScoringPlan` (scorers + the switch-aware option of
:func:`soi.gen.metrics.switch_aware`) over one task's eval rows; the generative study calls them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import math
import os
import re
import string
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from soi.errors import SoiError

# ------------------------------------------------------------------------------------------------ interface


@dataclass(frozen=True)
class Scores:
    """Per-row scores (float64) and, for scorers that produce text, the raw output per row."""

    values: np.ndarray
    raw: list[str] | None = None


class Scorer(ABC):
    """One per-row score. Subclasses set ``name`` and implement :meth:`score` (or :meth:`evaluate` when they keep a
    raw output); ``bounded`` scorers lie in [0, 1] and get a switch-aware twin."""

    name: ClassVar[str]
    bounded: ClassVar[bool] = True

    @abstractmethod
    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        """One float64 score per (row, prediction)."""

    def evaluate(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> Scores:
        """Scores and raw outputs (``None`` here; the judge and the reward model keep theirs)."""
        return Scores(self.score(rows, predictions))

    def aggregate(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str], values: np.ndarray) -> float:
        """One group's score from its per-row scores: their mean (0 for no rows)."""
        return float(np.mean(values)) if len(values) else 0.0


SCORERS: dict[str, type[Scorer]] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator: make ``cls`` available to :func:`make_scorer` and ``scoring: {scorers: [...]}`` as
    ``cls.name``."""
    SCORERS[cls.name] = cls
    return cls


def available_scorers() -> list[str]:
    """The registered scorer names."""
    return list(SCORERS)


def make_scorer(name: str, **params: Any) -> Scorer:
    """The scorer registered as ``name`` built with ``params``; an unknown name is a one-line :class:`SoiError`."""
    if name not in SCORERS:
        raise SoiError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
    return SCORERS[name](**params)


def _check_lengths(rows: Sequence[Any], predictions: Sequence[str]) -> None:
    if len(rows) != len(predictions):
        raise ValueError(f"{len(rows)} rows but {len(predictions)} predictions")


def _references(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [r.get("response") or "" for r in rows]


# --------------------------------------------------------------------------------------- reference metrics
@register_scorer
class ExactMatchScorer(Scorer):
    """Math exact match of the final number with ``row["answer"]`` (:func:`soi.gen.metrics.exact_match`)."""

    name = "exact_match"

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        from soi.gen.metrics import exact_match

        _check_lengths(rows, predictions)
        return exact_match(predictions, [r.get("answer") for r in rows]).astype(np.float64)


@register_scorer
class UnparsedScorer(Scorer):
    """1 where no final number can be read from the output (its mean: the unparsed-answer rate)."""

    name = "unparsed"

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        from soi.gen.metrics import answer_unparsed

        _check_lengths(rows, predictions)
        return answer_unparsed(predictions).astype(np.float64)


@register_scorer
class RougeLScorer(Scorer):
    """ROUGE-L F1 against ``row["response"]`` for any script (:func:`soi.gen.metrics.rouge_l_f`)."""

    name = "rouge_l"

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        from soi.gen.metrics import rouge_l_f

        _check_lengths(rows, predictions)
        return rouge_l_f(predictions, _references(rows))


@register_scorer
class LabelMatchScorer(Scorer):
    """1 where the output, stripped of surrounding whitespace, equals the reference ``row["response"]`` (else
    ``row["answer"]``), stripped, exactly: the accuracy of a label-generation task (e.g. MASSIVE intent as
    generation, where ``iot_hue_lighton`` for ``iot_hue_lightoff`` scores 0, while ROUGE-L gives it 2/3)."""

    name = "label_match"

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        _check_lengths(rows, predictions)
        refs = [str(r.get("response") or r.get("answer") or "").strip() for r in rows]
        return np.array([p.strip() == ref for p, ref in zip(predictions, refs, strict=True)], dtype=np.float64)


@register_scorer
class ChrfScorer(Scorer):
    """Sentence chrF against ``row["response"]``; a group's score is corpus chrF (Popović 2015)."""

    name = "chrf"

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        from soi.gen.metrics import chrf

        _check_lengths(rows, predictions)
        return chrf(predictions, _references(rows))

    def aggregate(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str], values: np.ndarray) -> float:
        from soi.gen.metrics import corpus_chrf

        return corpus_chrf(predictions, _references(rows))


@register_scorer
class LanguageFidelityScorer(Scorer):
    """1 where the output's identified language is ``row["language"]`` (as :func:`soi.gen.langid.language_fidelity`;
    ``candidates`` restricts the identifier, e.g. to the study's languages); ``raw`` keeps the identified code."""

    name = "language_fidelity"

    def __init__(self, candidates: Sequence[str] | None = None) -> None:
        self.candidates = None if candidates is None else tuple(candidates)

    def evaluate(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> Scores:
        """Fidelity per row; ``raw`` keeps the identified language code (``"und"`` without letters)."""
        from soi.gen.langid import base_language, identify

        _check_lengths(rows, predictions)
        codes = identify(predictions, self.candidates)
        want = [base_language(r["language"]) for r in rows]
        return Scores(np.array([c == w for c, w in zip(codes, want, strict=True)], dtype=np.float64), codes)

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        return self.evaluate(rows, predictions).values


# ------------------------------------------------------------------------------------------------ the rubric
DEFAULT_RUBRIC = """You are a strict grader of answers written by an AI assistant.

Rate the response to the user's request below on a scale of 1 to 5:
5 = fully correct, complete and helpful, written in the language of the request;
4 = correct and helpful with minor flaws;
3 = partly correct or partly helpful;
2 = mostly wrong, unhelpful, or written in a different language than the request;
1 = wrong, off-topic, empty or nonsensical.
If a reference answer is given, judge correctness against it.

[Request]
{prompt}

[Reference answer]
{reference}

[Response]
{response}

Explain your judgement in one or two sentences, then give the rating on its own line exactly as "Rating: [[N]]"
with N from 1 to 5."""

RATING_MIN, RATING_MAX = 1, 5
_RATING_BRACKETS = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
_RATING_WORD = re.compile(r"(?:rating|score)\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_rating(text: str | None) -> float | None:
    """The judge's rating mapped to [0, 1] (``(N - 1) / 4``), or ``None`` if the reply holds none in 1..5.

    The last ``[[N]]`` wins (the rubric's format, as MT-Bench, Zheng et al. 2023); without one, the last
    ``Rating: N`` / ``Score: N``. ``"... Rating: [[4]]"`` -> 0.75; ``"[[7]]"`` -> ``None``.
    """
    if not text:
        return None
    hits = _RATING_BRACKETS.findall(text) or _RATING_WORD.findall(text)
    if not hits:
        return None
    value = float(hits[-1])
    if not RATING_MIN <= value <= RATING_MAX:
        return None
    return (value - RATING_MIN) / (RATING_MAX - RATING_MIN)


def fill_rubric(rubric: str, row: Mapping[str, Any], prediction: str) -> str:
    """The rubric with ``{prompt}``, ``{reference}`` (the row's response, else its answer, else "(none)") and
    ``{response}`` (the model output) filled in."""
    ref = row.get("response") or row.get("answer")
    return rubric.format(prompt=row.get("prompt") or "", reference="(none)" if ref in (None, "") else str(ref),
                         response=prediction)


def check_rubric(rubric: str) -> str | None:
    """Why ``rubric`` is not a usable template (``None`` when it is): a ``str.format`` template that uses
    ``{response}`` and only ``{prompt}``, ``{reference}``, ``{response}``."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(rubric) if f is not None}
    except ValueError as exc:
        return f"not a str.format template: {exc}"
    extra = sorted(names - {"prompt", "reference", "response"})
    if extra:
        return f"unknown placeholder(s) {extra}; use {{prompt}}, {{reference}}, {{response}}"
    if "response" not in names:
        return "the rubric must contain {response}"
    return None


# ------------------------------------------------------------------------------------------------- the judge
def chat_endpoint(url: str) -> str:
    """``.../v1/chat/completions`` for a base URL (``http://host:8000`` or ``http://host:8000/v1``); a URL that
    already ends in ``/chat/completions`` is kept."""
    u = url.rstrip("/")
    if u.endswith("/chat/completions"):
        return u
    if u.endswith("/v1"):
        return u + "/chat/completions"
    return u + "/v1/chat/completions"


class _Junk(Exception):
    """A reply without a usable rating (retried like a failed request)."""


class _Aborted(SoiError):
    """A request not made because a parallel one already failed."""


def request_key(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request body (the judge's cache key)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


@register_scorer
class OpenAIJudge(Scorer):
    """An LLM judge behind an OpenAI-compatible ``POST /v1/chat/completions`` endpoint.

    Each (row, prediction) becomes one chat request: the filled ``rubric`` as the user message, ``temperature``
    (0: greedy) and ``max_tokens``. The reply's rating (:func:`parse_rating`) is the score; the reply text is kept
    (``raw``). Replies are cached in ``cache_dir/<key[:2]>/<key>.json`` (key: :func:`request_key` of the request
    body, so the same model + rubric + texts never ask twice, whatever the URL; atomic writes), so a rerun makes
    no requests. A failed request — connection refused, timeout after ``timeout_s``, HTTP 429/5xx, a reply that
    is not JSON or holds no rating — is retried up to ``retries`` times with backoff ``backoff_s * 2**attempt``;
    then, or at once for other HTTP errors (400, 401, 404), one :class:`SoiError` names the endpoint and the
    reason. ``workers`` requests run at a time. ``api_key_env`` names an environment variable holding a bearer
    token (never written to the cache).
    """

    name = "judge"

    def __init__(self, url: str, model: str, *, rubric: str | None = None, cache_dir: str | Path | None = None,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0, max_tokens: int = 256,
                 temperature: float = 0.0, api_key_env: str | None = None, workers: int = 4,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not url:
            raise SoiError("judge: no endpoint url")
        if not model:
            raise SoiError("judge: no model name")
        rubric = DEFAULT_RUBRIC if rubric is None else rubric
        if (err := check_rubric(rubric)) is not None:
            raise SoiError(f"judge rubric: {err}")
        for label, v, lo in (("timeout_s", timeout_s, 0.0), ("backoff_s", backoff_s, 0.0)):
            if not (math.isfinite(v) and v >= lo) or (label == "timeout_s" and v == 0):
                raise SoiError(f"judge: {label} must be a positive number, got {v}")
        if retries < 0 or workers < 1 or max_tokens < 1:
            raise SoiError(f"judge: retries >= 0, workers >= 1 and max_tokens >= 1 required, got {retries}, "
                           f"{workers}, {max_tokens}")
        self.url, self.endpoint, self.model, self.rubric = url, chat_endpoint(url), model, rubric
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.max_tokens, self.temperature, self.workers = int(max_tokens), float(temperature), int(workers)
        self.api_key_env = api_key_env
        self.sleep = sleep
        self._abort = threading.Event()
        self.requests = 0  # HTTP attempts made (cache hits make none)
        self.cache_hits = 0

    # ---------------------------------------------------------------- requests
    def body(self, row: Mapping[str, Any], prediction: str) -> dict[str, Any]:
        """The chat-completions request body for one (row, prediction)."""
        return {"model": self.model, "messages": [{"role": "user", "content": fill_rubric(self.rubric, row,
                                                                                          prediction)}],
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _post(self, body: Mapping[str, Any]) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            token = os.environ.get(self.api_key_env)
            if not token:
                raise SoiError(f"judge endpoint {self.endpoint}: environment variable {self.api_key_env} "
                               "(scoring.judge.api_key_env) is not set")
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.endpoint, data=json.dumps(body).encode("utf-8"), headers=headers,
                                     method="POST")
        self.requests += 1
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            payload = resp.read()
        try:
            reply = json.loads(payload)
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Junk(f"reply is not a chat completion: {payload[:80]!r}") from None
        if not isinstance(content, str):
            raise _Junk(f"reply content is not text: {content!r:.80}")
        return content

    def _ask(self, body: Mapping[str, Any]) -> tuple[str, float]:
        """One request with retries: ``(reply text, score)``; a one-line :class:`SoiError` after the last try."""
        reason = "no attempt"
        for attempt in range(self.retries + 1):
            if self._abort.is_set():
                raise _Aborted(f"judge endpoint {self.endpoint}: stopped after another request failed")
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                content = self._post(body)
                score = parse_rating(content)
                if score is None:
                    raise _Junk(f"no rating [[1-5]] in the reply {content[:80]!r}")
                return content, score
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code} {exc.reason}"
                if exc.code != 429 and exc.code < 500:
                    raise SoiError(f"judge endpoint {self.endpoint}: {reason} (check scoring.judge.url and "
                                   "scoring.judge.model)") from None
            except urllib.error.URLError as exc:
                reason = (f"no reply within {self.timeout_s:g} s" if isinstance(exc.reason, TimeoutError)
                          else f"cannot connect ({exc.reason})")
            except http.client.HTTPException as exc:
                reason = f"broken HTTP reply ({type(exc).__name__})"
            except (TimeoutError, OSError) as exc:  # socket timeouts, resets
                reason = (f"no reply within {self.timeout_s:g} s" if isinstance(exc, TimeoutError)
                          else f"connection failed ({exc})")
            except _Junk as exc:
                reason = str(exc)
        raise SoiError(f"judge endpoint {self.endpoint}: {reason} after {self.retries + 1} attempt(s)")

    # ---------------------------------------------------------------- cache
    def _cache_file(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cached(self, key: str) -> tuple[str, float] | None:
        path = self._cache_file(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            reply, score = entry["reply"], float(entry["score"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable entry: ask again (and overwrite it)
        return reply, score

    def _store(self, key: str, body: Mapping[str, Any], reply: str, score: float) -> None:
        path = self._cache_file(key)
        if path is not None:
            from soi._io import write_json

            write_json(path, {"key": key, "endpoint": self.endpoint, "request": body, "reply": reply,
                              "score": score})

    def judge_one(self, row: Mapping[str, Any], prediction: str) -> tuple[str, float]:
        """``(reply, score)`` of one response: from the cache, else asked (and cached)."""
        body = self.body(row, prediction)
        key = request_key(body)
        hit = self._cached(key)
        if hit is not None:
            self.cache_hits += 1
            return hit
        reply, score = self._ask(body)
        self._store(key, body, reply, score)
        return reply, score

    def evaluate(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> Scores:
        _check_lengths(rows, predictions)
        if self.workers == 1 or len(rows) <= 1:
            out = [self.judge_one(r, p) for r, p in zip(rows, predictions, strict=True)]
        else:
            self._abort.clear()
            pool = concurrent.futures.ThreadPoolExecutor(self.workers)
            try:
                futures = [pool.submit(self.judge_one, r, p) for r, p in zip(rows, predictions, strict=True)]
                out = [f.result() for f in futures]
            except BaseException as exc:
                self._abort.set()  # the first failure stops the others: no more requests, no more retries
                pool.shutdown(wait=True, cancel_futures=True)
                causes = [f.exception() for f in futures if f.done() and not f.cancelled()]
                first = next((e for e in causes if e is not None and not isinstance(e, _Aborted)), exc)
                raise first from None
            pool.shutdown()
        return Scores(np.array([s for _, s in out], dtype=np.float64), [r for r, _ in out])

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        return self.evaluate(rows, predictions).values


# ------------------------------------------------------------------------------------ local Hugging Face models
def _device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _conversation(tokenizer: Any, prompt: str, response: str | None) -> str:
    """The chat-formatted text (the tokenizer's template when it has one; else ``prompt\\n\\nresponse``)."""
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": prompt}]
        if response is None:
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tokenizer.apply_chat_template([*msgs, {"role": "assistant", "content": response}], tokenize=False)
    return prompt if response is None else f"{prompt}\n\n{response}"


def _load(path: str, auto_class: str) -> tuple[Any, Any]:
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = getattr(transformers, auto_class).from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise SoiError(f"cannot load the scoring model {path!r}: {' '.join(str(exc).split())[:200]}") from None
    return tok, model.eval()


@register_scorer
class RewardModelScorer(Scorer):
    """A local sequence-classification reward model (one output): the scalar reward ``r`` of (prompt, response),
    chat-formatted with the model's template. Score ``sigmoid(r)`` (``normalize="sigmoid"``, in [0, 1]) or ``r``
    (``"none"``, unbounded: no switch-aware twin); ``raw`` keeps ``r``."""

    name = "reward_model"

    def __init__(self, model: str, *, batch_size: int = 8, max_length: int = 1024, normalize: str = "sigmoid",
                 device: str | None = None) -> None:
        if normalize not in ("sigmoid", "none"):
            raise SoiError(f"reward_model: normalize must be sigmoid or none, got {normalize!r}")
        if batch_size < 1 or max_length < 2:
            raise SoiError(f"reward_model: batch_size >= 1 and max_length >= 2 required, got {batch_size}, "
                           f"{max_length}")
        self.model_path, self.batch_size, self.max_length = str(model), int(batch_size), int(max_length)
        self.normalize, self.device = normalize, device
        self._loaded: tuple[Any, Any] | None = None

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        return self.normalize == "sigmoid"

    def rewards(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        """The raw scalar reward per (row, prediction)."""
        import torch

        _check_lengths(rows, predictions)
        if self._loaded is None:
            self._loaded = _load(self.model_path, "AutoModelForSequenceClassification")
        tok, model = self._loaded
        if getattr(model.config, "num_labels", 1) != 1:
            raise SoiError(f"reward model {self.model_path!r} has {model.config.num_labels} outputs; a reward "
                           "model has one")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        tok.truncation_side = "left"  # a long conversation loses the start of its prompt, not the response
        dev = _device(self.device)
        model.to(dev)
        texts = [_conversation(tok, r.get("prompt") or "", p) for r, p in zip(rows, predictions, strict=True)]
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=self.max_length, add_special_tokens=False).to(dev)
                out.append(model(**enc).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def evaluate(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> Scores:
        r = self.rewards(rows, predictions)
        values = 1.0 / (1.0 + np.exp(-r)) if self.normalize == "sigmoid" else r
        return Scores(values, [repr(float(x)) for x in r])

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        return self.evaluate(rows, predictions).values


@register_scorer
class LocalJudgeScorer(Scorer):
    """A local causal LM as judge: the filled rubric as the user turn, the assistant turn opened with
    ``Rating: [[``, and the score the probability-weighted rating ``E[N] = sum_n n p(n) / sum_n p(n)`` over the
    next-token probabilities of ``1``..``5`` (G-Eval, Liu et al. 2023), mapped to [0, 1] as ``(E[N] - 1) / 4``;
    ``raw`` keeps ``E[N]``. Deterministic (no sampling) and always defined."""

    name = "local_judge"

    def __init__(self, model: str, *, rubric: str | None = None, batch_size: int = 8, max_length: int = 2048,
                 device: str | None = None) -> None:
        rubric = DEFAULT_RUBRIC if rubric is None else rubric
        if (err := check_rubric(rubric)) is not None:
            raise SoiError(f"local_judge rubric: {err}")
        if batch_size < 1 or max_length < 2:
            raise SoiError(f"local_judge: batch_size >= 1 and max_length >= 2 required, got {batch_size}, "
                           f"{max_length}")
        self.model_path, self.rubric = str(model), rubric
        self.batch_size, self.max_length, self.device = int(batch_size), int(max_length), device
        self._loaded: tuple[Any, Any] | None = None

    def digit_ids(self, tok: Any) -> list[int]:
        """Token ids of ``"1"``..``"5"`` (each must be one token)."""
        ids = []
        for n in range(RATING_MIN, RATING_MAX + 1):
            enc = tok.encode(str(n), add_special_tokens=False)
            if len(enc) != 1:
                raise SoiError(f"local judge {self.model_path!r}: the rating {n} is not one token ({enc})")
            ids.append(enc[0])
        return ids

    def expected_ratings(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        """``E[N]`` in [1, 5] per (row, prediction)."""
        import torch

        _check_lengths(rows, predictions)
        if self._loaded is None:
            self._loaded = _load(self.model_path, "AutoModelForCausalLM")
        tok, model = self._loaded
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        tok.truncation_side = "left"  # a long input loses its start, never the "Rating: [[" it is scored after
        ids = torch.tensor(self.digit_ids(tok))
        dev = _device(self.device)
        model.to(dev)
        texts = [_conversation(tok, fill_rubric(self.rubric, r, p), None) + "Rating: [["
                 for r, p in zip(rows, predictions, strict=True)]
        ratings = torch.arange(RATING_MIN, RATING_MAX + 1, dtype=torch.float64)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=self.max_length, add_special_tokens=False).to(dev)
                last = model(**enc).logits[:, -1, :].double().cpu()
                p = torch.softmax(last[:, ids], dim=-1)  # renormalised over the five rating tokens
                out.append((p * ratings).sum(-1).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def evaluate(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> Scores:
        e = self.expected_ratings(rows, predictions)
        return Scores((e - RATING_MIN) / (RATING_MAX - RATING_MIN), [f"{x:.6f}" for x in e])

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> np.ndarray:
        return self.evaluate(rows, predictions).values


# ------------------------------------------------------------------------------------------------ the plan
KIND_SCORERS: dict[str, tuple[str, ...]] = {"math": ("exact_match",),
                                            "instruction": ("rouge_l", "chrf", "language_fidelity"),
                                            "summarization": ("rouge_l", "chrf", "language_fidelity")}
SWITCH_SUFFIX = "_switch"
#: scorers without a switch-aware twin (they measure the language or the format themselves)
NO_SWITCH = ("language_fidelity", "unparsed")


def metric_names(kind: str, extra: Sequence[str] = (), switch_aware: str = "off",
                 bounded: Callable[[str], bool] | None = None) -> list[str]:
    """The per-row columns a ``kind`` task reports: its reference scorers, then ``extra``; with switch-aware
    scoring on, ``language_fidelity`` (and ``unparsed`` for math) are added and every bounded score ``m`` is
    followed by ``m_switch``."""
    names = list(dict.fromkeys([*KIND_SCORERS[kind], *extra]))
    if switch_aware == "off":
        return names
    names += [n for n in switch_companions(kind) if n not in names]
    is_bounded = bounded or (lambda n: SCORERS[n].bounded if n in SCORERS else True)
    return with_switch_twins(names, is_bounded)


def switch_companions(kind: str) -> tuple[str, ...]:
    """The scorers switch-aware scoring adds when a ``kind`` task lacks them: ``language_fidelity`` (and
    ``unparsed`` for math)."""
    return ("unparsed", "language_fidelity") if kind == "math" else ("language_fidelity",)


def with_switch_twins(names: Sequence[str], bounded: Callable[[str], bool]) -> list[str]:
    """``names`` with ``m_switch`` right after every bounded ``m`` that has a twin (not in :data:`NO_SWITCH`)."""
    out = []
    for n in names:
        out.append(n)
        if n not in NO_SWITCH and bounded(n):
            out.append(n + SWITCH_SUFFIX)
    return out


@dataclass
class ScoringPlan:
    """The scorers of one task kind and the switch-aware option (``off`` / ``multiply`` / ``cap`` with
    ``switch_cap``); ``candidates`` restrict language identification (the study's languages)."""

    scorers: list[Scorer]
    switch_aware: str = "off"
    switch_cap: float = 0.5
    candidates: tuple[str, ...] | None = None
    _by_name: dict[str, Scorer] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        from soi.gen.metrics import SWITCH_MODES

        if self.switch_aware not in SWITCH_MODES:
            raise SoiError(f"switch_aware must be one of {', '.join(SWITCH_MODES)}, got {self.switch_aware!r}")
        self._by_name = {s.name: s for s in self.scorers}

    def columns(self) -> list[str]:
        """The per-row columns :func:`score_rows` returns, in order (each ``m_switch`` right after ``m``)."""
        names = [s.name for s in self.scorers]
        if self.switch_aware == "off":
            return names
        return with_switch_twins(names, lambda n: self._by_name[n].bounded)


def default_plan(kind: str, *, extra: Sequence[Scorer] = (), switch_aware: str = "off", switch_cap: float = 0.5,
                 candidates: Sequence[str] | None = None) -> ScoringPlan:
    """The plan of a ``kind`` task: its reference scorers (as :data:`KIND_SCORERS`), ``extra`` scorers, and with
    switch-aware scoring ``language_fidelity`` (+ ``unparsed`` for math)."""
    if kind not in KIND_SCORERS:
        raise SoiError(f"unknown task kind {kind!r}; known: {', '.join(KIND_SCORERS)}")
    cands = None if candidates is None else tuple(candidates)
    scorers: list[Scorer] = []
    for name in KIND_SCORERS[kind]:
        scorers.append(LanguageFidelityScorer(cands) if name == "language_fidelity" else make_scorer(name))
    for s in extra:
        if s.name not in {x.name for x in scorers}:
            scorers.append(s)
    names = {s.name for s in scorers}
    if switch_aware != "off":
        scorers += [LanguageFidelityScorer(cands) if n == "language_fidelity" else make_scorer(n)
                    for n in switch_companions(kind) if n not in names]
    return ScoringPlan(scorers, switch_aware, switch_cap, cands)


def score_rows(plan: ScoringPlan, rows: Sequence[Mapping[str, Any]],
               predictions: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Per-row scores ``{column: float64 array}`` (in :meth:`ScoringPlan.columns` order) and raw outputs
    ``{scorer: [text per row]}`` of the scorers that keep one. Switch-aware columns multiply (cap) the raw score
    where the response's language is not the prompt's (:func:`soi.gen.langid.language_match`: responses without
    letters keep their score)."""
    _check_lengths(rows, predictions)
    results = {s.name: s.evaluate(rows, predictions) for s in plan.scorers}
    raw = {n: r.raw for n, r in results.items() if r.raw is not None}
    out: dict[str, np.ndarray] = {}
    keep = None
    if plan.switch_aware != "off":
        from soi.gen.langid import UNDETERMINED, base_language, language_match

        fid = plan._by_name.get("language_fidelity")
        codes = results["language_fidelity"].raw if isinstance(fid, LanguageFidelityScorer) and \
            fid.candidates == plan.candidates else None
        if codes is not None:  # the identification the fidelity scorer made: not twice
            keep = np.array([c in (base_language(r["language"]), UNDETERMINED) for c, r in zip(codes, rows,
                                                                                               strict=True)],
                            dtype=bool)
        else:
            _, keep = language_match(predictions, [r["language"] for r in rows], plan.candidates)
    for s in plan.scorers:
        out[s.name] = np.asarray(results[s.name].values, dtype=np.float64)
        if keep is not None and s.name not in NO_SWITCH and s.bounded:
            from soi.gen.metrics import switch_aware

            out[s.name + SWITCH_SUFFIX] = switch_aware(out[s.name], keep, plan.switch_aware, plan.switch_cap)
    return out, raw


def aggregate_rows(plan: ScoringPlan, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str],
                   per_row: Mapping[str, np.ndarray]) -> dict[str, float]:
    """One group's scores: each scorer's :meth:`Scorer.aggregate` (a mean; corpus chrF for ``chrf``), and the mean
    of each switch-aware column."""
    out = {}
    for col, values in per_row.items():
        scorer = plan._by_name.get(col)
        out[col] = (scorer.aggregate(rows, predictions, values) if scorer is not None
                    else float(np.mean(values)) if len(values) else 0.0)
    return out


__all__ = ["DEFAULT_RUBRIC", "KIND_SCORERS", "SCORERS", "ChrfScorer", "ExactMatchScorer", "LabelMatchScorer",
           "LanguageFidelityScorer",
           "LocalJudgeScorer", "OpenAIJudge", "RewardModelScorer", "RougeLScorer", "Scorer", "Scores",
           "ScoringPlan", "UnparsedScorer", "aggregate_rows", "available_scorers", "chat_endpoint", "check_rubric",
           "default_plan", "fill_rubric", "make_scorer", "metric_names", "parse_rating", "register_scorer",
           "request_key", "score_rows", "switch_companions", "with_switch_twins"]
