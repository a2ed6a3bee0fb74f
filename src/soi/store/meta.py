"""Run metadata (``run.json``) and the run-directory layout.

A run directory is the contract between recording (trainers) and analysis::

    RUN_DIR/
      run.json              # RunMeta: model, setting, recording mode, checkpoint unit, seed, labels per task
      examples.parquet      # one row per recorded example (idx, example_id, task, source, language, gold, text)
      dynamics/             # one Parquet part per (checkpoint, writer rank), written atomically
        ckpt-000000.rank-0000.parquet
        ...
      analysis/             # written by `soi analyze`

See ``docs/store.md`` for the column-level specification.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from soi._io import write_json
from soi.errors import SoiError

FORMAT = "soi-run"
FORMAT_VERSION = 1
RECORDING_MODES = ("train-pass", "eval-pass")
CHECKPOINT_UNITS = ("epoch", "step")

RUN_JSON = "run.json"
EXAMPLES_FILE = "examples.parquet"
DYNAMICS_DIR = "dynamics"
ANALYSIS_DIR = "analysis"
PART_RE = re.compile(r"^ckpt-(\d{6})\.rank-(\d{4})\.parquet$")

_FIELD_TYPES: tuple[tuple[str, tuple[type, ...], str], ...] = (
    ("format_version", (int,), "an integer"),
    ("tasks", (dict,), "a mapping of task name to label names"),
    ("recording_mode", (str,), "a string"),
    ("checkpoint_unit", (str,), "a string"),
    ("model", (str, type(None)), "a string or null"),
    ("setting", (str, type(None)), "a string or null"),
    ("seed", (int, type(None)), "an integer or null"),
    ("created", (str,), "a string"),
    ("extra", (dict,), "a mapping"),
)
"""JSON types of run.json fields (checked before the fields are used; a bool is not an integer)."""

RecordingMode = Literal["train-pass", "eval-pass"]
CheckpointUnit = Literal["epoch", "step"]


def part_name(checkpoint: int, rank: int = 0) -> str:
    """File name of the dynamics part for ``checkpoint`` written by ``rank``."""
    if not 0 <= checkpoint < 1_000_000 or not 0 <= rank < 10_000:
        raise SoiError(f"checkpoint {checkpoint} / rank {rank} out of range for a part file name")
    return f"ckpt-{checkpoint:06d}.rank-{rank:04d}.parquet"


def dynamics_dir(run_dir: str | Path, mode: str | None = None) -> Path:
    """Folder of the dynamics parts; a secondary recording mode lives in ``dynamics-<mode>/``."""
    run_dir = Path(run_dir)
    return run_dir / DYNAMICS_DIR if mode is None else run_dir / f"{DYNAMICS_DIR}-{mode}"


@dataclass
class RunMeta:
    """Metadata of one recorded run (the content of ``run.json``).

    Parameters
    ----------
    tasks
        Label names per task, ``{"sst2": ["negative", "positive"]}``; the list order is the label index.
    recording_mode
        ``"train-pass"``: numbers come from the training forward pass (cartography's convention);
        ``"eval-pass"``: from a no-grad pass at each checkpoint.
    checkpoint_unit
        ``"epoch"`` or ``"step"`` (a checkpoint every N optimizer steps).
    """

    tasks: dict[str, list[str]]
    recording_mode: RecordingMode = "train-pass"
    checkpoint_unit: CheckpointUnit = "epoch"
    model: str | None = None
    setting: str | None = None
    seed: int | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, dict) or not self.tasks:
            raise SoiError("run metadata: 'tasks' must name at least one task with its labels")
        for task, labels in self.tasks.items():
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise SoiError(f"run metadata: tasks.{task} must be a list of label names")
            if len(set(labels)) != len(labels):
                raise SoiError(f"run metadata: tasks.{task} has duplicate label names")
        if self.recording_mode not in RECORDING_MODES:
            raise SoiError(f"run metadata: recording_mode must be one of {RECORDING_MODES}, "
                           f"got {self.recording_mode!r}")
        if self.checkpoint_unit not in CHECKPOINT_UNITS:
            raise SoiError(f"run metadata: checkpoint_unit must be one of {CHECKPOINT_UNITS}, "
                           f"got {self.checkpoint_unit!r}")

    @property
    def is_generative(self) -> bool:
        """A generative (SFT) run: ``extra.generative`` describes its columns (docs/store.md, "Generative runs")."""
        return isinstance(self.extra.get("generative"), dict)

    def num_labels(self, task: str) -> int:
        """Number of classes of ``task``."""
        return len(self.tasks[task])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, run_dir: str | Path) -> None:
        """Write ``run.json`` atomically."""
        write_json(Path(run_dir) / RUN_JSON, self.to_dict())

    @classmethod
    def load(cls, run_dir: str | Path) -> RunMeta:
        """Read and validate ``RUN_DIR/run.json``."""
        path = Path(run_dir) / RUN_JSON
        if not Path(run_dir).is_dir():
            raise SoiError("run directory not found", path=run_dir)
        if not path.is_file():
            raise SoiError("missing run.json; is this a soi run directory?", path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SoiError(f"not valid JSON ({exc})", path=path) from None
        if not isinstance(data, dict):
            raise SoiError("expected a JSON object", path=path)
        if data.get("format", FORMAT) != FORMAT:
            raise SoiError(f"format is {data.get('format')!r}, expected {FORMAT!r}", path=path)
        for name, kinds, what in _FIELD_TYPES:
            value = data.get(name)
            if name in data and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
                raise SoiError(f"field {name!r} must be {what}, got {type(value).__name__} {value!r:.60}",
                               path=path)
        if int(data.get("format_version", 1)) > FORMAT_VERSION:
            raise SoiError(f"format_version {data['format_version']} is newer than this soi "
                           f"understands ({FORMAT_VERSION}); upgrade soi", path=path)
        if "tasks" not in data:
            raise SoiError("missing field 'tasks'", path=path)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SoiError(f"unknown field(s) {unknown}", path=path)
        try:
            return cls(**data)
        except SoiError as exc:
            raise SoiError(str(exc), path=path) from None
        except TypeError as exc:
            raise SoiError(f"bad field ({exc})", path=path) from None
