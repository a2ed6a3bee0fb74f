"""The study YAML: one model, some datasets, several training runs (single / multi-*) x seeds, and comparisons.

>>> cfg = StudyConfig.from_yaml("study.yaml")   # doctest: +SKIP

Every problem is a one-line :class:`~soi.errors.SoiError` naming the file and the field path, e.g.
``study.yaml: runs[1].train[0]: unknown dataset 'sst3'``. See ``docs/studies.md`` for the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator, model_validator

from soi.config.base import NAME_MAX_LENGTH, SEED_LIMIT, StrictModel
from soi.config.two_stage import TwoStageSpec
from soi.errors import SoiError

SETTINGS = ("single", "multi-task", "multi-source", "multi-lingual")
GROUP_KEYS = ("task", "source", "language")

Setting = Literal["single", "multi-task", "multi-source", "multi-lingual"]
GroupKey = Literal["task", "source", "language"]


def _distinct(v: list[int]) -> list[int]:
    if len(set(v)) != len(v):
        raise ValueError(f"seeds must be distinct, got {v}")
    if any(not 0 <= s < SEED_LIMIT for s in v):
        raise ValueError(f"seeds must be integers in [0, 2**32), got {v}")
    return v


Seeds = Annotated[list[int], AfterValidator(_distinct)]  # distinct training seeds


class _Model(StrictModel):
    """Study-YAML models: no unknown fields, no booleans as numbers, finite floats (:mod:`soi.config.base`)."""


_M = TypeVar("_M", bound=BaseModel)


class TrainSpec(_Model):
    """Optimisation settings shared by every run."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    sampling: Literal["proportional", "temperature", "uniform"] = "proportional"
    temperature: float = Field(2.0, gt=0)
    freeze_embeddings: bool = False
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive"]] = Field(
        default_factory=list, description="accelerate trackers receiving per-checkpoint SOI metrics (soi run)")


class RecordingSpec(_Model):
    """How dynamics are recorded: from the training forward pass, or a no-grad pass after each epoch."""

    mode: Literal["train-pass", "eval-pass"] = "train-pass"
    keep_logits: bool = False
    every_steps: int | None = Field(None, ge=1, description="a checkpoint every N optimizer steps (default: each "
                                    "epoch end)")

    @model_validator(mode="after")
    def _logits_need_whole_checkpoints(self) -> RecordingSpec:
        if self.keep_logits and self.every_steps is not None and self.mode == "train-pass":
            raise ValueError("keep_logits with every_steps needs mode: eval-pass (a train-pass step checkpoint "
                             "fills the examples not trained on since the last one, without logits)")
        return self


class HubSpec(_Model):
    """Any Hugging Face hub dataset (``datasets.<key>.hub``, with ``origin: hub``): where and how rows map."""

    path: str = Field(min_length=1, description="hub repo id, e.g. AmazonScience/massive")
    config: str | None = None
    columns: dict[str, str] = Field(default_factory=dict, description="canonical column -> hub column")
    splits: dict[str, str] | None = Field(None, description="soi split -> hub split; default train/validation/test")
    labels: list[str] | None = Field(None, min_length=1, description="label order; default the ClassLabel names")
    label_map: dict[str, str] = Field(default_factory=dict, description="hub label name -> soi label name")
    language: str = "und"
    revision: str | None = None


class DatasetSpec(_Model):
    """One dataset under a study-local key: a registered name or canonical folder (``origin: local``, the
    default), a registered name's hub equivalent (``origin: hub``; ``auto``: the local copy if present, else the
    hub), any hub dataset (``origin: hub`` + ``hub``), or a data-spec YAML file (``spec``; see docs/data.md)."""

    name: str = Field(min_length=1)
    origin: Literal["local", "hub", "auto"] = "local"
    hub: HubSpec | None = None
    spec: str | None = Field(None, min_length=1, description="a data-spec YAML file (relative to the study file)")
    task: str | None = Field(None, min_length=1, description="head name; default = the dataset name")
    n_train: int | float | None = None
    n_eval: int | float | None = None
    eval_split: str | None = None  # default: test, else validation
    labels: list[str] | None = Field(None, min_length=1, description="keep only rows with these labels")

    @field_validator("n_train", "n_eval")
    @classmethod
    def _positive(cls, v: int | float | None) -> int | float | None:
        if v is None:
            return v
        if isinstance(v, float) and not 0 < v <= 1:
            raise ValueError(f"a fraction must be in (0, 1], got {v}")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _spec_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and isinstance(data.get("spec"), str):
            data = {**data, "name": Path(data["spec"]).stem}  # a spec file names the dataset after itself
        return data

    @model_validator(mode="after")
    def _origin(self) -> DatasetSpec:
        if self.spec is not None and (self.hub is not None or self.origin != "local"):
            raise ValueError("spec (a data-spec file) cannot be combined with origin / hub")
        if self.hub is not None and self.origin != "hub":
            raise ValueError("hub: needs origin: hub")
        return self

    @property
    def head(self) -> str:
        """The task (head) name."""
        return self.task or self.name


class KGrid(_Model):
    """"Fixed set + k examples of each other language": one run per ``k`` (``k = 0`` is zero-shot)."""

    datasets: list[str] = Field(min_length=1, description="dataset keys that get k training examples each")
    k: list[int] = Field(min_length=1, description="the grid of k values (>= 0, distinct)")

    @field_validator("k")
    @classmethod
    def _grid(cls, v: list[int]) -> list[int]:
        if any(x < 0 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"k must be distinct integers >= 0, got {v}")
        return sorted(v)


class RunSpec(_Model):
    """One training run (repeated per seed).

    ``k_grid`` expands the run into one run per k, named ``<name>-k<k>``: ``train`` is the fixed set, each
    dataset in ``k_grid.datasets`` adds ``k`` training examples (seeded, nested: the k=16 examples are part of
    the k=64 ones) and is always evaluated, so ``k = 0`` measures zero-shot transfer.
    """

    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    setting: Setting
    train: list[str] = Field(min_length=1)
    n_train: dict[str, int | float] = Field(default_factory=dict,
                                            description="per-run override of datasets.<key>.n_train")
    eval: list[str] = Field(default_factory=list, description="extra eval sets of this run (e.g. zero-shot languages)")
    k_grid: KGrid | None = None
    k: int | None = Field(None, ge=0, description="set by k_grid expansion: the run's k")
    family: str | None = Field(None, description="set by k_grid expansion: the name of the k_grid run")
    match_size: str | None = Field(None, min_length=1, description="subsample this run's mixture (seeded, nested, "
                                   "proportional per dataset) to the total training size of the named run")

    @field_validator("n_train")
    @classmethod
    def _sizes(cls, v: dict[str, int | float]) -> dict[str, int | float]:
        for key, n in v.items():
            DatasetSpec._positive(n)  # same rule as datasets.<key>.n_train
            if isinstance(n, bool):
                raise ValueError(f"{key}: expected a size, got {n}")
        return v

    def expand(self) -> list[RunSpec]:
        """The runs this spec stands for: itself, or one run per k of ``k_grid``."""
        if self.k_grid is None:
            return [self]
        runs = []
        for k in self.k_grid.k:
            extra = [d for d in self.k_grid.datasets if d not in self.train]
            train = list(self.train) + (extra if k else [])
            sizes = dict(self.n_train) | ({d: k for d in self.k_grid.datasets} if k else {})
            evals = list(self.eval) + [d for d in extra if not k and d not in self.eval]
            runs.append(self.model_copy(update={"name": f"{self.name}-k{k}", "train": train, "n_train": sizes,
                                                "eval": evals, "k_grid": None, "k": k, "family": self.name}))
        return runs


class EvalSpec(_Model):
    """Extra evaluation: datasets evaluated but never trained on."""

    ood: list[str] = Field(default_factory=list)


class CompareSpec(_Model):
    """Compare run ``a`` (rows, usually single) with run ``b`` (columns, usually multi) per seed."""

    a: str
    b: str
    group_by: list[GroupKey] = Field(default_factory=lambda: list(GROUP_KEYS))


class StudyConfig(_Model):
    """A whole study (see ``docs/studies.md``)."""

    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="alias (minilm-l6, me5-small), local path or hub id")
    data_dir: str | None = None
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)
    data_seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    max_length: int = Field(128, ge=8)
    train: TrainSpec = Field(default_factory=TrainSpec)
    recording: RecordingSpec = Field(default_factory=RecordingSpec)
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    runs: list[RunSpec] = Field(min_length=1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    compare: list[CompareSpec] | None = None
    two_stage: TwoStageSpec | None = None

    @model_validator(mode="after")
    def _paths(self) -> StudyConfig:
        if self.data_dir is not None and not Path(self.data_dir).expanduser().is_dir():
            raise FieldError("data_dir", f"folder not found: {self.data_dir}")
        if (err := local_model_error(self.model)) is not None:
            raise FieldError("model", err)
        return self

    @model_validator(mode="after")
    def _references(self) -> StudyConfig:
        names = _known_datasets(self.data_dir)
        for key, ds in self.datasets.items():
            if ds.spec is not None or ds.hub is not None:
                continue  # a data-spec file or any hub dataset: checked when loaded
            if ds.origin == "hub" and (err := _hub_error(ds.name)):
                raise FieldError(f"datasets.{key}.name", err)
            if ds.origin != "hub" and names is not None and ds.name not in names:
                raise FieldError(f"datasets.{key}.name",
                                  f"unknown dataset {ds.name!r}; known: {', '.join(sorted(names))}")
        seen: set[str] = set()
        expanded: list[RunSpec] = []
        origin: dict[str, int] = {}  # expanded run name -> index in the YAML's runs list
        for i, run in enumerate(self.runs):
            refs = [(f"train[{j}]", k) for j, k in enumerate(run.train)]
            refs += [(f"eval[{j}]", k) for j, k in enumerate(run.eval)]
            refs += [(f"n_train.{k}", k) for k in run.n_train]
            refs += [(f"k_grid.datasets[{j}]", k) for j, k in enumerate(run.k_grid.datasets if run.k_grid else [])]
            for where, key in refs:
                if key not in self.datasets:
                    raise FieldError(f"runs[{i}].{where}", f"unknown dataset {key!r}; the datasets section "
                                      f"has: {', '.join(self.datasets)}")
            if run.k_grid is not None and run.setting == "single":
                raise FieldError(f"runs[{i}].k_grid", "a k grid adds datasets, so the setting cannot be 'single'")
            for sub in run.expand():
                if sub.name in seen:
                    raise FieldError(f"runs[{i}].name", f"duplicate run name {sub.name!r}")
                seen.add(sub.name)
                origin[sub.name] = i
                expanded.append(sub)
            if len(set(run.train)) != len(run.train):
                raise FieldError(f"runs[{i}].train", f"dataset listed twice: {run.train}")
            if run.setting == "single" and len(run.train) != 1:
                raise FieldError(f"runs[{i}].train", f"a single-setting run trains on exactly one dataset, "
                                  f"got {len(run.train)}")
            real = [self.datasets[k].name for k in run.train]
            if len(set(real)) != len(real):
                raise FieldError(f"runs[{i}].train", "two keys name the same dataset (example ids would clash)")
        object.__setattr__(self, "runs", expanded)  # k grids become one run per k
        if (err := match_size_error(expanded, origin)) is not None:
            raise FieldError(*err)
        trained = {k for r in self.runs for k in r.train}
        for j, key in enumerate(self.eval.ood):
            if key not in self.datasets:
                raise FieldError(f"eval.ood[{j}]", f"unknown dataset {key!r}; the datasets section has: "
                                  f"{', '.join(self.datasets)}")
            if key in trained:
                raise FieldError(f"eval.ood[{j}]", f"dataset {key!r} is trained on by a run, so it is not OOD")
        for i, c in enumerate(self.compare or []):
            for side in ("a", "b"):
                if getattr(c, side) not in seen:
                    raise FieldError(f"compare[{i}].{side}", f"unknown run {getattr(c, side)!r}; runs: "
                                      f"{', '.join(seen)}")
            if c.a == c.b:
                raise FieldError(f"compare[{i}]", "a and b are the same run")
        if self.two_stage is not None and (err := self.two_stage.reference_error(self)) is not None:
            raise FieldError(*err)
        return self

    # ------------------------------------------------------------------ helpers
    def run(self, name: str) -> RunSpec:
        """The run called ``name``."""
        return next(r for r in self.runs if r.name == name)

    def comparisons(self) -> list[CompareSpec]:
        """The ``compare`` list, or by default every single run vs every multi-* run whose training data
        contains the single run's dataset."""
        if self.compare is not None:
            return list(self.compare)
        out = []
        for a in self.runs:
            if a.setting != "single":
                continue
            for b in self.runs:
                if b.setting != "single" and set(a.train) <= set(b.train):
                    out.append(CompareSpec(a=a.name, b=b.name))
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str | Path = "<study>") -> StudyConfig:
        """Validate a parsed mapping; errors name ``source`` and the field path."""
        return validate_study(cls, data, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        """Read and validate a study YAML file (relative ``data_dir`` and ``model`` paths resolve against it)."""
        path = Path(path)
        data = read_yaml(path)
        return cls.from_dict(resolve_relative(data, path) if isinstance(data, dict) else data, source=path.name)


def match_size_error(runs: list[RunSpec], origin: dict[str, int]) -> tuple[str, str] | None:
    """``(field, message)`` of the first bad ``runs[].match_size`` (an unknown run, itself, a cycle), else None."""
    names = {r.name: r for r in runs}
    for run in runs:
        if run.match_size is None:
            continue
        field = f"runs[{origin[run.name]}].match_size"
        if run.match_size not in names:
            return field, f"unknown run {run.match_size!r}; runs: {', '.join(names)}"
        if run.match_size == run.name:
            return field, "a run cannot match its own size"
        chain = [run.name]
        target: str | None = run.match_size
        while target is not None:
            if target in chain:
                return field, f"cycle: {' -> '.join([*chain, target])}"
            chain.append(target)
            target = names[target].match_size
    return None


def validate_study(model: type[_M], data: Any, source: str | Path) -> _M:
    """``model.model_validate(data)`` with every problem as a one-line :class:`SoiError` naming ``source`` and
    the field path."""
    if not isinstance(data, dict):
        raise SoiError(f"the study must be a mapping, got {type(data).__name__}", path=source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SoiError(_first_error(exc), path=source) from None
    except FieldError as exc:  # pragma: no cover - pydantic wraps it, kept for safety
        raise SoiError(f"{exc.field}: {exc.message}", path=source) from None


def read_yaml(path: str | Path, what: str = "study file") -> Any:
    """Parse a YAML file; a missing or non-UTF-8 file, a syntax error or nesting too deep for the parser is a
    one-line :class:`SoiError` (naming the line for syntax errors)."""
    import yaml

    from soi._io import read_text

    path = Path(path)
    if not path.is_file():
        raise SoiError(f"{what} not found", path=path)
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise SoiError(f"{where}invalid YAML ({problem})", path=path) from None
    except RecursionError:
        raise SoiError("invalid YAML (nested too deeply)", path=path) from None


def resolve_relative(data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A copy of a study mapping whose relative ``data_dir`` (and ``./model`` path) resolve against ``path``'s
    folder."""
    data = dict(data)
    base = Path(path).resolve().parent
    if isinstance(data.get("data_dir"), str) and not Path(data["data_dir"]).expanduser().is_absolute():
        data["data_dir"] = str(base / data["data_dir"])
    if isinstance(data.get("datasets"), dict):  # data-spec files resolve against the study file too
        data["datasets"] = {k: {**v, "spec": str(base / v["spec"])} if isinstance(v, dict) and isinstance(
            v.get("spec"), str) and not Path(v["spec"]).expanduser().is_absolute() else v
            for k, v in data["datasets"].items()}
    model = data.get("model")
    if isinstance(model, str) and model.startswith(".") and (base / model).exists():
        data["model"] = str((base / model).resolve())
    return data


class FieldError(ValueError):
    """A cross-field problem at ``field`` (raised inside the model validator)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_UNION_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "constrained-int", "constrained-float"}


def local_model_error(model: str) -> str | None:
    """Why ``model`` names a local path that does not exist (``None`` for aliases, hub ids and existing paths).

    A name looks local when it starts with ``/``, ``./``, ``../`` or ``~`` (hub ids are ``org/name``)."""
    if not model.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        return None
    path = Path(model).expanduser()
    if path.exists():
        return None
    return f"local model path not found: {model} (a model is an alias, an existing folder or a hub id org/name)"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")
                                                                      or p in _UNION_TAGS)))
    msg = str(err.get("msg", "invalid"))
    ctx = err.get("ctx") or {}
    if isinstance(ctx.get("error"), FieldError):
        return str(ctx["error"])  # field path already in the message
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "field required"
    return f"{_path(loc)}: {msg}" if loc else msg


def _hub_error(name: str) -> str | None:
    """Why the registered dataset ``name`` cannot be loaded from the hub (``None`` if it can)."""
    from soi.data.registry import REGISTRY

    entry = REGISTRY.get(name)
    if entry is None:
        return (f"origin: hub needs a registered dataset, not {name!r}; for any hub dataset add hub: {{path: ..., "
                "columns: ..., labels: ...}}")
    if entry.hub is None:
        return f"{name} has no hub equivalent soi can load ({entry.hub_note}); use origin: local"
    return None


def _known_datasets(data_dir: str | None) -> set[str] | None:
    """Registered names plus canonical folders in the data dir (``None`` if nothing can be listed)."""
    from soi.data.registry import dataset_names, resolve_data_dir

    names = set(dataset_names())
    try:
        root = resolve_data_dir(data_dir)
    except SoiError:
        return names
    names.update(p.name for p in root.iterdir() if (p / "info.json").is_file())
    return names
