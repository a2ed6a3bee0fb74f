"""`soi analyze` end to end in a subprocess: output, files, rules files, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from soi.analysis import analyze_run
from soi.analysis.categories import SOI_CATEGORIES
from soi.store import dynamics_table, write_part


def soi_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soi.cli.main", "analyze", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def analysis_files(run: Path) -> list[str]:
    out = run / "analysis"
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_analyze_ok(sim_run):
    proc = soi_cli(sim_run)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for cat in SOI_CATEGORIES:
        assert cat in proc.stdout
    assert "final accuracy" in proc.stdout and "accuracy per checkpoint" in proc.stdout
    assert "alpha" in proc.stdout and "beta" in proc.stdout  # per-task columns with two tasks
    assert "40 examples x 4 checkpoints" in proc.stdout
    assert analysis_files(sim_run) == ["per_example.parquet", "summary.json"]
    summary = json.loads((sim_run / "analysis" / "summary.json").read_text(encoding="utf-8"))
    table = pq.read_table(sim_run / "analysis" / "per_example.parquet")
    assert table.num_rows == 40 and summary["n_examples"] == 40 and summary["n_checkpoints"] == 4
    # the files agree with the in-process analysis of the same run, and the printed counts with the files
    ref = analyze_run(sim_run, write=False)
    assert table.to_pydict() == ref.table.to_pydict()
    counts = summary["groups"]["all"]["all"]["counts"]
    assert counts == ref.summary["groups"]["all"]["all"]["counts"]
    assert sum(counts.values()) == 40
    for cat in SOI_CATEGORIES:
        line = next(x for x in proc.stdout.splitlines() if f" {cat} " in x)
        assert f" {counts[cat]} " in line
    accs = summary["accuracy_per_checkpoint"]
    assert "accuracy per checkpoint: " + " ".join(f"{a:.3f}" for a in accs) in proc.stdout


def test_analyze_options(sim_run):
    proc = soi_cli(sim_run, "--late-fraction", "1.0", "--include-ci", "--max-checkpoints", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    summary = json.loads((sim_run / "analysis" / "summary.json").read_text(encoding="utf-8"))
    assert summary["late_fraction"] == 1.0 and summary["early_cutoff"] == 3
    assert summary["include_ci"] is True and summary["n_checkpoints"] == 3
    assert summary["groups"]["all"]["all"]["counts"]["learned_late"] == 0  # everything learned is early


RULES = {"rules": {"hard": "confidence < 0.3", "alpha_ok": "task == 'alpha' and final_correct"},
         "default": "rest"}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_analyze_rules_file(sim_run, tmp_path, suffix):
    path = tmp_path / f"rules{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(RULES), encoding="utf-8")
    else:
        path.write_text("rules:\n  hard: confidence < 0.3\n  alpha_ok: \"task == 'alpha' and final_correct\"\n"
                        "default: rest\n", encoding="utf-8")
    proc = soi_cli(sim_run, "--rules", path)
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(sim_run / "analysis" / "per_example.parquet")
    summary = json.loads((sim_run / "analysis" / "summary.json").read_text(encoding="utf-8"))
    conf = np.asarray(table["confidence"])
    alpha_ok = (np.asarray(table["task"].to_pylist()) == "alpha") & np.asarray(table["final_correct"])
    expected = np.where(conf < 0.3, "hard", np.where(alpha_ok, "alpha_ok", "rest"))
    assert table["category"].to_pylist() == expected.tolist()
    custom = summary["custom"]
    assert custom["categories"] == ["hard", "alpha_ok", "rest"]
    assert custom["rules"] == RULES["rules"] | {"<default>": "rest"}
    assert custom["groups"]["all"]["all"]["counts"] == {k: int((expected == k).sum()) for k in custom["categories"]}
    assert 0 < custom["groups"]["all"]["all"]["counts"]["hard"] < 40  # the rules split this run


# --------------------------------------------------------------------------------------------------------
# bad input: exit 2, one stderr line naming the file, no traceback, nothing written


def _part(run: Path, ckpt: int, rank: int = 0) -> Path:
    return run / "dynamics" / f"ckpt-{ckpt:06d}.rank-{rank:04d}.parquet"


def _rewrite(path: Path, edit: Callable[[pa.Table], pa.Table]) -> Path:
    pq.write_table(edit(pq.read_table(path)), path)
    return path


def _set_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def missing_run_dir(run: Path) -> Path:
    return run.parent / "no-such-run"


def missing_run_json(run: Path) -> Path:
    (run / "run.json").unlink()
    return run / "run.json"


def bad_json(run: Path) -> Path:
    (run / "run.json").write_text('{"tasks": {"alpha": ["a", "b"]', encoding="utf-8")
    return run / "run.json"


def missing_examples(run: Path) -> Path:
    (run / "examples.parquet").unlink()
    return run / "examples.parquet"


def examples_missing_column(run: Path) -> Path:
    return _rewrite(run / "examples.parquet", lambda t: t.drop_columns(["gold"]))


def duplicate_example_ids(run: Path) -> Path:
    def edit(t: pa.Table) -> pa.Table:
        ids = t["example_id"].to_pylist()
        ids[7] = ids[3]
        return _set_column(t, "example_id", ids)
    return _rewrite(run / "examples.parquet", edit)


def gold_out_of_range_examples(run: Path) -> Path:
    # 3 labels per task: gold 3 is out of range (the parts are left alone; examples are checked first)
    return _rewrite(run / "examples.parquet", lambda t: _set_column(t, "gold", [3, *t["gold"].to_pylist()[1:]]))


def checkpoint_gap(run: Path) -> Path:
    _part(run, 2).unlink()
    return run / "dynamics"


def duplicate_rows(run: Path) -> Path:
    # an extra rank part for checkpoint 1 with a row for idx 5, which rank 0 already has
    part = pq.read_table(_part(run, 1))
    d = part.filter(pc.equal(part["idx"], 5)).to_pydict()
    assert d["idx"] == [5]
    write_part(run, dynamics_table(checkpoint=1, step=d["step"][0], idx=d["idx"], gold=d["gold"], pred=d["pred"],
                                   p_gold=d["p_gold"], margin=d["margin"], loss=d["loss"]), checkpoint=1, rank=1)
    return run / "dynamics"


def example_missing_from_checkpoint(run: Path) -> Path:
    return _rewrite(_part(run, 1), lambda t: t.filter(pc.not_equal(t["idx"], 9)))


def nan_p_gold(run: Path) -> Path:
    return _rewrite(_part(run, 2), lambda t: _set_column(t, "p_gold", [float("nan"), *t["p_gold"].to_pylist()[1:]]))


def gold_out_of_range_part(run: Path) -> Path:
    return _rewrite(_part(run, 3), lambda t: _set_column(t, "gold", [7, *t["gold"].to_pylist()[1:]]))


def gold_differs(run: Path) -> Path:
    def edit(t: pa.Table) -> pa.Table:
        gold = t["gold"].to_pylist()
        gold[4] = (gold[4] + 1) % 3  # still in range, but not examples.parquet's label
        return _set_column(t, "gold", gold)
    return _rewrite(_part(run, 0), edit)


def part_missing_column(run: Path) -> Path:
    return _rewrite(_part(run, 1), lambda t: t.drop_columns(["p_gold"]))


# corruption -> what the one-line message must say (besides the file it names)
BAD_RUNS = {
    missing_run_dir: "run directory not found",
    missing_run_json: "missing run.json",
    bad_json: "not valid JSON",
    missing_examples: "missing examples.parquet",
    examples_missing_column: "missing column(s) ['gold']",
    duplicate_example_ids: "duplicate example_id 'ex-3'",
    gold_out_of_range_examples: "gold label 3 of example 'ex-0' out of range for task",
    checkpoint_gap: "checkpoint gap: checkpoint(s) [2] missing",
    duplicate_rows: "duplicate rows for example 'ex-5' (idx 5) at checkpoint 1",
    example_missing_from_checkpoint: "1 example(s) missing at checkpoint 1, e.g. 'ex-9'",
    nan_p_gold: "column 'p_gold' has NaN or inf at checkpoint 2",
    gold_out_of_range_part: "gold label of example 'ex-0' differs from examples.parquet at checkpoint 3",
    gold_differs: "gold label of example 'ex-4' differs from examples.parquet at checkpoint 0",
    part_missing_column: "missing column(s) ['p_gold']",
}


def assert_clean_error(proc: subprocess.CompletedProcess, names: Path) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert str(names) in lines[0], (str(names), lines[0])
    return lines[0]


BAD_RULES = {
    "not_found": None,
    "bad_yaml.yaml": "rules: [unclosed\n",
    "bad_json.json": '{"rules": {"hard": "confidence < 0.3"}',
    "not_mapping.yaml": "- confidence < 0.3\n",
    "no_rules_mapping.json": '{"rules": ["confidence < 0.3"]}',
    "unknown_field.json": '{"rules": {"hard": "confidence < 0.3"}, "defualt": "x"}',
    "unsafe.yaml": "rules:\n  evil: \"__import__('os').getpid() > 0\"\n",
    "syntax.yaml": "rules:\n  hard: 'confidence <'\n",
    "default_clash.json": '{"rules": {"hard": "confidence < 0.3"}, "default": "hard"}',
    "not_a_string.json": '{"rules": {"hard": 0.3}}',
    "empty_rules.json": '{"rules": {}}',
    # the next two only fail when evaluated on the run's columns (see the report: they must still name the file)
    "unknown_column.yaml": "rules:\n  hard: confidnce < 0.3\n",
    "type_mismatch.yaml": "rules:\n  hard: task > 0.5\n",
}


@pytest.fixture(scope="module")
def bad_results(sim_run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every bad-input case on its own copy of the run, run through the CLI concurrently (for speed).

    Maps case name -> (run copy, path the error must name, finished process).
    """
    jobs: dict[str, tuple[Path, Path, list]] = {}
    for corrupt in BAD_RUNS:
        run = tmp_path_factory.mktemp(corrupt.__name__) / "run"
        shutil.copytree(sim_run_template, run)
        names = corrupt(run)
        jobs[corrupt.__name__] = (run, names, [names if corrupt is missing_run_dir else run])
    for name, text in BAD_RULES.items():
        base = tmp_path_factory.mktemp("rules")
        run = base / "run"
        shutil.copytree(sim_run_template, run)
        path = base / ("missing.yaml" if text is None else name)
        if text is not None:
            path.write_text(text, encoding="utf-8")
        jobs[f"rules:{name}"] = (run, path, [run, "--rules", path])
    with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2))) as pool:
        procs = list(pool.map(lambda job: soi_cli(*job[2]), jobs.values()))
    return {k: (run, names, proc) for (k, (run, names, _)), proc in zip(jobs.items(), procs, strict=True)}


@pytest.mark.parametrize("corrupt", list(BAD_RUNS), ids=lambda f: f.__name__)
def test_bad_run_is_a_one_line_error(bad_results, corrupt):
    run, names, proc = bad_results[corrupt.__name__]
    assert BAD_RUNS[corrupt] in assert_clean_error(proc, names)
    assert analysis_files(run) == []


@pytest.mark.parametrize("name", list(BAD_RULES))
def test_bad_rules_file(bad_results, name):
    run, path, proc = bad_results[f"rules:{name}"]
    assert_clean_error(proc, path)
    assert analysis_files(run) == []


def test_deferred_pandas_import_still_allows_pandas() -> None:
    """The CLI hides pandas from pyarrow's first probe; pyarrow must still convert to and from pandas later."""
    code = (
        "import sys\n"
        "from soi.cli._common import defer_pandas_import\n"
        "defer_pandas_import()\n"
        "import pyarrow as pa\n"
        "assert 'pandas' not in sys.modules\n"
        "df = pa.table({'a': [1, 2]}).to_pandas()\n"
        "import pandas as pd\n"
        "assert isinstance(df, pd.DataFrame) and df['a'].tolist() == [1, 2]\n"
        "t = pa.Table.from_pandas(pd.DataFrame({'b': [3.0]}))\n"
        "assert t['b'].to_pylist() == [3.0]\n"
        "assert pa.array(pd.Series([1, 2], dtype='int8')).type == pa.int8()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
