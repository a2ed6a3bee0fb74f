"""Query a run directory with DuckDB or polars: the store's Parquet files as named tables (see docs/store.md).

>>> con = soi.store.duckdb("runs/sst2")                        # doctest: +SKIP
>>> con.sql("SELECT soi, count(*) FROM per_example GROUP BY soi").df()   # doctest: +SKIP

Tables: ``examples`` (``examples.parquet``), ``dynamics`` (every part of ``dynamics/``), ``dynamics_<mode>`` for a
second recording mode (``dynamics-eval-pass/`` -> ``dynamics_eval_pass``) and ``per_example`` (after
``soi analyze``). Every table has ``idx``, the join key. Parts whose names start with ``.`` (interrupted writes)
are not read. DuckDB and polars are optional (``pip install duckdb polars``; ``soi[dev]`` has both).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from soi.errors import SoiError
from soi.store.meta import ANALYSIS_DIR

PARTS_GLOB = "ckpt-*.parquet"


def run_tables(run_dir: str | Path) -> dict[str, str]:
    """``{table name: Parquet file or glob}`` of a run directory (SoiError if it is not one)."""
    run = Path(run_dir)
    if not (run / "run.json").is_file() or not (run / "examples.parquet").is_file():
        raise SoiError("not a soi run directory (no run.json / examples.parquet)", path=run)
    tables = {"examples": str(run / "examples.parquet")}
    for folder in sorted(run.glob("dynamics*")):
        if folder.is_dir() and any(folder.glob(PARTS_GLOB)):
            tables[re.sub(r"\W", "_", folder.name)] = str(folder / PARTS_GLOB)
    per_example = run / ANALYSIS_DIR / "per_example.parquet"
    if per_example.is_file():
        tables["per_example"] = str(per_example)
    return tables


def duckdb(run_dir: str | Path, connection: Any = None) -> Any:
    """A DuckDB connection (new in-memory, or ``connection``) with one view per table of :func:`run_tables`."""
    try:
        import duckdb as ddb
    except ImportError:
        raise SoiError("soi.store.duckdb needs the duckdb package: pip install duckdb") from None
    con = connection if connection is not None else ddb.connect()
    for name, path in run_tables(run_dir).items():
        quoted = path.replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{quoted}')")
    return con


def polars(run_dir: str | Path) -> dict[str, Any]:
    """``{table name: polars.LazyFrame}`` for every table of :func:`run_tables` (``pl.scan_parquet``)."""
    try:
        import polars as pl
    except ImportError:
        raise SoiError("soi.store.polars needs the polars package: pip install polars") from None
    return {name: pl.scan_parquet(path) for name, path in run_tables(run_dir).items()}
