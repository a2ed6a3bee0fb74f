"""The dynamics store: run directories of Parquet files (see docs/store.md)."""

from soi.store.meta import RunMeta, dynamics_dir, part_name
from soi.store.query import duckdb, polars, run_tables
from soi.store.reader import Dynamics, iter_checkpoints, list_parts, load_dynamics, read_examples, tag_codes
from soi.store.writer import (
    DYNAMICS_SCHEMA,
    EXAMPLES_SCHEMA,
    RunWriter,
    dynamics_table,
    examples_table,
    rows_from_logits,
    write_examples,
    write_part,
)

__all__ = [
    "DYNAMICS_SCHEMA",
    "EXAMPLES_SCHEMA",
    "Dynamics",
    "RunMeta",
    "RunWriter",
    "duckdb",
    "dynamics_dir",
    "dynamics_table",
    "examples_table",
    "iter_checkpoints",
    "list_parts",
    "load_dynamics",
    "part_name",
    "polars",
    "read_examples",
    "rows_from_logits",
    "run_tables",
    "tag_codes",
    "write_examples",
    "write_part",
]
