"""Hardening, classes 1 and 2: store values are validated at read, text is UTF-8 at the door (docs/errors.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_common import run_soi
from soi.errors import SoiError
from soi.store import load_dynamics
from soi.store.meta import RunMeta

PART = "dynamics/ckpt-000001.rank-0000.parquet"
BAD_UTF8 = b"caf\xe9 \xff"  # Latin-1 bytes: not UTF-8


cli = run_soi


def set_column(path: Path, name: str, values: pa.Array) -> None:
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.column_names.index(name), name, values), path)


def raw_strings(values: list[bytes]) -> pa.Array:
    """A string array holding the given bytes as they are (pyarrow builds it without checking UTF-8)."""
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()),
                                                            pa.py_buffer(b"".join(values))])


def load_error(run: Path) -> str:
    with pytest.raises(SoiError) as info:
        load_dynamics(run)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------- class 1: values
@pytest.mark.parametrize(("column", "make", "expect"), [
    ("pred", lambda t: pa.array(t["pred"].to_numpy().astype(np.float64) + 0.7), "'pred' must hold integers"),
    ("pred", lambda t: pa.array([None, *t["pred"].to_pylist()[1:]], pa.int16()), "'pred' has 1 null"),
    ("step", lambda t: pa.array([None, *t["step"].to_pylist()[1:]], pa.int64()), "'step' has 1 null"),
    ("checkpoint", lambda t: pa.array([None] * t.num_rows, pa.int32()), "'checkpoint' has 40 null"),
    ("p_gold", lambda t: pa.array([str(x) for x in t["p_gold"].to_pylist()]), "'p_gold' must hold numbers"),
    ("p_gold", lambda t: pa.array(np.full(t.num_rows, 1.25, np.float32)), "'p_gold' is a probability but has 1.25"),
    ("p_gold", lambda t: pa.array(np.full(t.num_rows, -0.5, np.float64)), "'p_gold' is a probability but has -0.5"),
    ("pred", lambda t: pa.array(np.full(t.num_rows, 70_000, np.int64)), "out of range for int16"),
    ("gold", lambda t: pa.array([bool(x) for x in t["gold"].to_pylist()]), "'gold' must hold integers"),
])
def test_bad_part_values_are_refused(sim_run: Path, column: str, make, expect: str) -> None:
    path = sim_run / PART
    set_column(path, column, make(pq.read_table(path)))
    msg = load_error(sim_run)
    assert msg.startswith(str(path)) and expect in msg


def test_wider_types_are_read_exactly(sim_run: Path) -> None:
    """int64 pred / float64 p_gold holding representable values load to the same numbers (cast, not truncated)."""
    before = load_dynamics(sim_run)
    path = sim_run / PART
    t = pq.read_table(path)
    set_column(path, "pred", t["pred"].cast(pa.int64()))
    set_column(path, "p_gold", t["p_gold"].cast(pa.float64()))
    after = load_dynamics(sim_run)
    np.testing.assert_array_equal(after.pred, before.pred)
    np.testing.assert_array_equal(after.p_gold, before.p_gold)


_TYPES = {"int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
          "float32": pa.float32(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
_KIND = {"idx": "i", "checkpoint": "i", "step": "i", "gold": "i", "pred": "i", "p_gold": "f", "margin": "f",
         "loss": "f"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(column=st.sampled_from(sorted(_KIND)), type_name=st.sampled_from(sorted(_TYPES)),
       nulls=st.lists(st.integers(0, 39), max_size=3, unique=True), fractional=st.booleans())
def test_random_part_types_and_nulls(sim_run_template: Path, tmp_path_factory, column: str, type_name: str,
                                     nulls: list[int], fractional: bool) -> None:
    """Any column type and null pattern in a part: either the run loads to exactly the original numbers, or the
    read is refused with one line naming the file and the column; never a traceback, never a silent change."""
    run = tmp_path_factory.mktemp("rand") / "run"
    shutil.copytree(sim_run_template, run)
    before = load_dynamics(run)
    path = run / PART
    table = pq.read_table(path)
    original = table[column].to_numpy()
    values: list = original.tolist()
    if fractional and _KIND[column] == "i" and type_name.startswith("float"):
        values = [v + 0.5 for v in values]
    target = _TYPES[type_name]
    if type_name == "string":
        values = [str(v) for v in values]
    elif type_name == "bool":
        values = [bool(v) for v in values]
    for i in nulls:
        values[i] = None
    try:
        arr = pa.array(values, target)
    except (pa.ArrowInvalid, OverflowError):
        return  # the value does not fit the type at all (e.g. step 400 in int8): nothing to write
    set_column(path, column, arr)
    kind_ok = (type_name.startswith("int") if _KIND[column] == "i"
               else type_name.startswith(("int", "float")))
    ok = kind_ok and not nulls
    if not ok:
        msg = load_error(run)
        assert msg.startswith(str(path)) and repr(column) in msg
        return
    after = load_dynamics(run)  # an accepted type: the stored numbers load unchanged
    for name in ("pred", "p_gold", "margin", "loss"):
        want = getattr(before, name).copy()
        if name == column:  # what was written (pa.array itself may have truncated a float to an int type)
            want[:, 1] = np.asarray(arr.to_pylist(), want.dtype)
        np.testing.assert_array_equal(getattr(after, name), want)
    np.testing.assert_array_equal(after.steps, before.steps)


def test_rank_parts_with_different_columns(tmp_path: Path, write_run) -> None:
    from soi.store import examples_table

    ex = examples_table([f"e{i}" for i in range(6)], [0, 1] * 3, task="t")
    run = write_run(tmp_path / "run", {"t": ["a", "b"]}, ex, np.zeros((6, 2), np.int16), np.full((6, 2), 0.5),
                    ranks=2)
    rank1 = run / "dynamics/ckpt-000001.rank-0001.parquet"
    t = pq.read_table(rank1)
    pq.write_table(t.append_column("logits", pa.array([[0.0, 1.0]] * t.num_rows, pa.list_(pa.float32()))), rank1)
    msg = load_error(run)
    assert "rank parts of checkpoint 1 have different columns" in msg and "['logits']" in msg


def test_rank_parts_with_different_integer_widths_load(tmp_path: Path, write_run) -> None:
    from soi.store import examples_table

    ex = examples_table([f"e{i}" for i in range(6)], [0, 1] * 3, task="t")
    pred = np.array([[0, 1], [1, 1], [0, 0], [1, 0], [0, 1], [1, 1]], np.int16)
    run = write_run(tmp_path / "run", {"t": ["a", "b"]}, ex, pred, np.full((6, 2), 0.5), ranks=2)
    rank1 = run / "dynamics/ckpt-000001.rank-0001.parquet"
    set_column(rank1, "pred", pq.read_table(rank1)["pred"].cast(pa.int64()))
    np.testing.assert_array_equal(load_dynamics(run).pred, pred)


@pytest.mark.parametrize(("field", "value", "expect"), [
    ("format_version", "abc", "field 'format_version' must be an integer"),
    ("format_version", True, "field 'format_version' must be an integer"),
    ("tasks", ["alpha", "beta"], "field 'tasks' must be a mapping"),
    ("tasks", {"alpha": "abc"}, "tasks.alpha must be a list of label names"),
    ("tasks", {}, "'tasks' must name at least one task"),
    ("seed", "7", "field 'seed' must be an integer or null"),
    ("extra", [], "field 'extra' must be a mapping"),
    ("model", 3, "field 'model' must be a string or null"),
])
def test_wrongly_typed_run_json(sim_run: Path, field: str, value, expect: str) -> None:
    path = sim_run / "run.json"
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(SoiError) as info:
        RunMeta.load(sim_run)
    assert str(info.value).startswith(f"{path}: ") and expect in str(info.value)


def test_empty_run_is_reported_as_empty(sim_run: Path, capsys) -> None:
    ex = sim_run / "examples.parquet"
    pq.write_table(pq.read_table(ex).slice(0, 0), ex)
    assert "the run has no examples" in load_error(sim_run)
    code, err = cli(capsys, "analyze", sim_run)
    assert code == 2 and err.count("\n") == 1 and "no examples" in err and "step" not in err


def test_examples_gold_null_and_float(sim_run: Path) -> None:
    ex = sim_run / "examples.parquet"
    t = pq.read_table(ex)
    set_column(ex, "gold", pa.array([None, *t["gold"].to_pylist()[1:]], pa.int16()))
    assert "'gold' has 1 null" in load_error(sim_run)
    set_column(ex, "gold", pa.array(np.asarray(t["gold"].to_pylist(), float)))
    assert "'gold' must hold integers" in load_error(sim_run)


# ------------------------------------------------------------------------------------------ class 2: encodings
@pytest.mark.parametrize("column", ["example_id", "text"])
def test_non_utf8_examples_refused_by_every_reader(sim_run: Path, tmp_path: Path, capsys, column: str) -> None:
    ex = sim_run / "examples.parquet"
    t = pq.read_table(ex)
    values = [BAD_UTF8 + str(i).encode() for i in range(t.num_rows)]
    set_column(ex, column, raw_strings(values))
    assert f"column {column!r} holds text that is not valid UTF-8" in load_error(sim_run)
    for args in (("analyze", sim_run), ("report", sim_run, "--out", tmp_path / "r.html"),
                 ("select", sim_run, "--out", tmp_path / "sel", "--sample", "3"),
                 ("export", "cartography", sim_run, tmp_path / "cart")):
        code, err = cli(capsys, *args)
        assert code == 2, args
        assert err.count("\n") == 1 and "not valid UTF-8" in err, (args, err)
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "sel").exists()


def test_non_utf8_tag_dictionary_refused(sim_run: Path) -> None:
    ex = sim_run / "examples.parquet"
    t = pq.read_table(ex)
    lang = pa.DictionaryArray.from_arrays(pa.array(np.zeros(t.num_rows, np.int32)), raw_strings([BAD_UTF8]))
    set_column(ex, "language", lang)
    assert "column 'language' holds text that is not valid UTF-8" in load_error(sim_run)


def test_non_utf8_cartography_import(tmp_path: Path, capsys) -> None:
    td = tmp_path / "cart" / "training_dynamics"
    td.mkdir(parents=True)
    for e in range(2):
        rows = [b'{"guid": "' + BAD_UTF8 + str(i).encode() + b'", "logits_epoch_' + str(e).encode()
                + b'": [0.1, 0.2], "gold": ' + str(i % 2).encode() + b"}" for i in range(4)]
        (td / f"dynamics_epoch_{e}.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    code, err = cli(capsys, "import", "cartography", tmp_path / "cart", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and "UTF-8" in err, err
    assert not (tmp_path / "run").exists()


def test_non_utf8_from_table_refused(tmp_path: Path, capsys) -> None:
    table = pa.table({"idx": pa.array([0, 1]), "example_id": raw_strings([BAD_UTF8, b"b"]),
                      "soi": pa.array(["never_learned", "always_correct"])})
    path = tmp_path / "table.parquet"
    pq.write_table(table, path)
    code, err = cli(capsys, "select", "--from-table", path, "--out", tmp_path / "sel", "--categories",
                    "never_learned")
    assert code == 2 and err.count("\n") == 1 and "not valid UTF-8" in err, err
    assert not (tmp_path / "sel").exists()
