"""allenai/cartography import/export (soi.formats.cartography, `soi import|export cartography`).

Every comparison is against tests/cartography_ref.py, an independent per-example re-implementation of
cartography's reader and ``compute_train_dy_metrics`` run on the ORIGINAL cartography files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cartography_ref import TD_METRICS_COLUMNS, read_training_dynamics, reference_metrics, write_epoch
from soi.analysis.metrics import all_metrics
from soi.errors import SoiError
from soi.formats.cartography import export_cartography, import_cartography
from soi.store import RunMeta, RunWriter, examples_table, load_dynamics, rows_from_logits
from soi.store.reader import read_examples

METRIC_COLUMNS = TD_METRICS_COLUMNS[2:]


# ----------------------------------------------------------------------------------------------- helpers


def make_dynamics(n: int = 12, epochs: int = 4, classes: int = 3, seed: int = 0,
                  guids: str = "int") -> dict[str, Any]:
    """Logits (E, n, C) with argmax ties and a never-correct example, golds and guids (epoch-0 order)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(epochs, n, classes)).round(4)
    gold = rng.integers(0, classes, n)
    gold[0], gold[1] = 1, 0
    logits[:, 0, :] = 0.0
    logits[:, 0, 0] = logits[:, 0, 1] = 1.5  # tie between 0 and 1 -> argmax 0 != gold 1: never correct
    logits[:, 1, :2] = [2.0, 2.0]  # tie -> argmax 0 == gold 0: always correct
    logits[:, 1, 2:] = -1.0
    logits[1:3, 2, :] = 0.25  # all-equal logits at two epochs for example 2
    if guids == "int":
        ids: list[Any] = [int(x) for x in rng.permutation(n) + 7]
    elif guids == "sparse_int":
        ids = [int(x) for x in rng.choice(10**12, size=n, replace=False) - 10**11]
    else:
        ids = [f"ex-{i}:{'ab'[i % 2]}" for i in rng.permutation(n)]
    return {"logits": logits, "gold": gold, "ids": ids}


def write_model(model_dir: Path, dyn: dict[str, Any], *, seed: int = 1, shuffle: bool = True) -> Path:
    """Write cartography files; every epoch in its own shuffled order (epoch 0 defines `index`)."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(dyn["ids"], dtype=object)
    for e, z in enumerate(dyn["logits"]):
        order = rng.permutation(len(ids)) if (shuffle and e > 0) else np.arange(len(ids))
        write_epoch(model_dir, e, list(ids[order]), z[order], dyn["gold"][order])
    return model_dir


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Raw JSON lines (json.dumps writes NaN/Infinity literally, unlike pandas)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def run_cli(args: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run soi's real entry point (main(): SoiError -> 'error: ...' on stderr, exit 2) in-process."""
    from soi.cli import main as cli

    code: int = 0
    with mock.patch.object(sys, "argv", ["soi", *map(str, args)]):
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_matches_reference(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(got.columns) == TD_METRICS_COLUMNS
    assert got["guid"].tolist() == ref["guid"].tolist()
    assert got["index"].tolist() == list(range(len(ref)))
    for col in METRIC_COLUMNS:
        np.testing.assert_allclose(got[col].to_numpy(float), ref[col].to_numpy(float), rtol=0, atol=1e-6,
                                   err_msg=col)


# ------------------------------------------------------------------------------------ import / export


@pytest.mark.parametrize("guids", ["int", "sparse_int", "str"])
@pytest.mark.parametrize("include_ci", [False, True])
def test_round_trip_and_metrics_match_reference(tmp_path: Path, guids: str, include_ci: bool) -> None:
    dyn = make_dynamics(guids=guids)
    model = write_model(tmp_path / "model", dyn)
    run = import_cartography(model, tmp_path / "run")
    out = export_cartography(run, tmp_path / "out", include_ci=include_ci)

    original = read_training_dynamics(model)
    exported = read_training_dynamics(out)
    assert list(exported) == list(original)  # same guids, same types, epoch-0 order
    for guid, rec in original.items():
        assert exported[guid]["gold"] == rec["gold"]
        np.testing.assert_allclose(exported[guid]["logits"], rec["logits"], rtol=1e-6, atol=1e-7)
    first = read_jsonl(out / "training_dynamics" / "dynamics_epoch_0.jsonl")[0]
    assert list(first) == ["guid", "logits_epoch_0", "gold"]
    assert isinstance(first["guid"], str if guids == "str" else int)

    got = pd.read_json(out / "td_metrics.jsonl", lines=True, dtype={"guid": object})
    ref = reference_metrics(original, include_ci=include_ci)
    assert_matches_reference(got, ref)
    # the fixture really has the edge cases: argmax tie never correct -> forgetfulness 1000; forgotten ones
    assert got["forgetfulness"].iloc[0] == 1000 and got["correctness"].iloc[0] == 0
    assert got["correctness"].iloc[1] == 4 and got["forgetfulness"].iloc[1] == 0
    assert (got["forgetfulness"].between(1, 999)).any()


def test_import_contents(tmp_path: Path) -> None:
    dyn = make_dynamics(n=9, epochs=3, guids="str")
    model = write_model(tmp_path / "model", dyn)
    run = import_cartography(model / "training_dynamics", tmp_path / "run", task="nli",
                             labels=["entailment", "neutral", "contradiction"], model="roberta-large",
                             setting="full")
    d = load_dynamics(run)
    meta = d.meta
    assert meta.tasks == {"nli": ["entailment", "neutral", "contradiction"]}
    assert (meta.recording_mode, meta.checkpoint_unit, meta.model, meta.setting) == (
        "train-pass", "epoch", "roberta-large", "full")
    info = meta.extra["import"]
    assert info["format"] == "cartography" and info["guid_type"] == "str" and info["id_field"] == "guid"
    assert (info["examples"], info["epochs"], info["classes"]) == (9, 3, 3)
    assert d.example_ids.tolist() == dyn["ids"]  # idx = position in dynamics_epoch_0
    assert d.checkpoints.tolist() == [0, 1, 2] and d.steps.tolist() == [1, 2, 3]
    assert d.gold.tolist() == dyn["gold"].tolist()
    ref = read_training_dynamics(model)
    for i, guid in enumerate(dyn["ids"]):
        for e in range(3):
            z = ref[guid]["logits"][e]
            probs = np.exp(np.float32(z) - np.float32(max(z)))
            assert d.p_gold[i, e] == pytest.approx(float(probs[dyn["gold"][i]] / probs.sum()), abs=1e-7)
            assert d.pred[i, e] == int(np.argmax(z))
    assert d.pred[0].tolist() == [0, 0, 0]  # tie resolved to the lowest index, as np.argmax
    part = pq.read_table(run / "dynamics" / "ckpt-000001.rank-0000.parquet")
    assert part["logits"].to_pylist()[4] == pytest.approx(ref[dyn["ids"][4]]["logits"][1], rel=1e-6)


def test_no_logits_then_export_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_model(tmp_path / "model", make_dynamics(n=5, epochs=2))
    code, out, err = run_cli(["import", "cartography", model, tmp_path / "run", "--no-keep-logits"], capsys)
    assert code == 0, err
    assert "imported 5 examples x 2 epochs x 3 classes" in out
    assert "logits" not in pq.read_schema(tmp_path / "run" / "dynamics" / "ckpt-000000.rank-0000.parquet").names
    code, _, err = run_cli(["export", "cartography", tmp_path / "run", tmp_path / "out"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "no logit vectors" in err
    assert "ckpt-000000.rank-0000.parquet" in err
    assert not (tmp_path / "out").exists()


def test_cli_round_trip_and_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dyn = make_dynamics(n=8, epochs=3)
    model = write_model(tmp_path / "model", dyn)
    run = tmp_path / "run"
    code, _, err = run_cli(["import", "cartography", model, run, "--labels", "a, b ,c", "--task", "t"],
                             capsys)
    assert code == 0, err
    assert RunMeta.load(run).tasks == {"t": ["a", "b", "c"]}
    # existing run: refused without --overwrite, untouched
    code, _, err = run_cli(["import", "cartography", model, run], capsys)
    assert code == 2 and "--overwrite" in err and str(run) in err
    assert RunMeta.load(run).tasks == {"t": ["a", "b", "c"]}
    code, _, err = run_cli(["import", "cartography", model, run, "--overwrite"], capsys)
    assert code == 0, err
    assert RunMeta.load(run).tasks == {"task": ["class_0", "class_1", "class_2"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "run"]  # no temp dirs left
    # a non-run directory is never replaced
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    code, _, err = run_cli(["import", "cartography", model, other, "--overwrite"], capsys)
    assert code == 2 and "not a soi run directory" in err
    assert (other / "keep.txt").read_text() == "x"

    code, _, err = run_cli(["export", "cartography", run, tmp_path / "out", "--include-ci"], capsys)
    assert code == 0, err
    got = pd.read_json(tmp_path / "out" / "td_metrics.jsonl", lines=True)
    assert_matches_reference(got, reference_metrics(read_training_dynamics(model), include_ci=True))


def test_custom_id_field_and_json_suffix(tmp_path: Path) -> None:
    folder = tmp_path / "td"
    folder.mkdir()
    rng = np.random.default_rng(3)
    ids = ["q1", "q2", "q3", "q4"]
    gold = [0, 1, 1, 0]
    for e in range(2):
        z = rng.normal(size=(4, 2))
        write_jsonl(folder / f"dynamics_epoch_{e}.json",
                    [{"id": i, f"logits_epoch_{e}": list(r), "gold": g} for i, r, g in zip(ids, z, gold, strict=True)])
    with pytest.raises(SoiError, match=r"missing field 'guid'.*--id-field"):
        import_cartography(folder, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    run = import_cartography(folder, tmp_path / "run", id_field="id")
    assert load_dynamics(run).example_ids.tolist() == ids


def test_export_multitask_widths(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ids = ["a0", "a1", "a2", "b0", "b1"]
    tasks = ["a", "a", "a", "b", "b"]
    gold = np.array([0, 1, 0, 2, 1])
    meta = RunMeta(tasks={"a": ["x", "y"], "b": ["p", "q", "r"]}, checkpoint_unit="step")
    w = RunWriter(tmp_path / "run", meta)
    w.write_examples(examples_table(ids, gold, task=tasks))
    z_by_ckpt = []
    for c in range(2):
        za, zb = rng.normal(size=(3, 2)), rng.normal(size=(2, 3))
        z_by_ckpt.append((za, zb))
        rows_a, rows_b = rows_from_logits(za, gold[:3]), rows_from_logits(zb, gold[3:])
        from soi.store import dynamics_table, write_part
        table = dynamics_table(
            checkpoint=c, step=10 * (c + 1), idx=np.arange(5), gold=gold,
            **{k: np.concatenate([rows_a[k], rows_b[k]]) for k in rows_a},
            logits=[*za, *zb])
        write_part(tmp_path / "run", table, checkpoint=c)
    with pytest.raises(SoiError, match=r"different numbers of labels .*--task"):
        export_cartography(tmp_path / "run", tmp_path / "out")
    export_cartography(tmp_path / "run", tmp_path / "out", task="b")
    rows = read_jsonl(tmp_path / "out" / "training_dynamics" / "dynamics_epoch_1.jsonl")
    assert [r["guid"] for r in rows] == ["b0", "b1"]  # not imported from cartography: string guids
    assert [r["gold"] for r in rows] == [2, 1]
    np.testing.assert_allclose([r["logits_epoch_1"] for r in rows], z_by_ckpt[1][1], rtol=1e-6)
    got = pd.read_json(tmp_path / "out" / "td_metrics.jsonl", lines=True, dtype={"guid": object})
    dyn = {ids[3 + i]: {"gold": int(gold[3 + i]), "logits": [z_by_ckpt[c][1][i].tolist() for c in range(2)]}
           for i in range(2)}
    assert_matches_reference(got, reference_metrics(dyn))
    # a stale epoch file from an earlier, longer export is not silently left behind
    (tmp_path / "out" / "training_dynamics" / "dynamics_epoch_5.jsonl").write_text("")
    with pytest.raises(SoiError, match=r"dynamics_epoch_5\.jsonl"):
        export_cartography(tmp_path / "run", tmp_path / "out", task="b")


# ----------------------------------------------------------------------------------------- bad inputs


def _records(dyn: dict[str, Any], epoch: int) -> list[dict[str, Any]]:
    return [{"guid": g, f"logits_epoch_{epoch}": z.tolist(), "gold": int(y)}
            for g, z, y in zip(dyn["ids"], dyn["logits"][epoch], dyn["gold"], strict=True)]


def _rewrite(model: Path, epoch: int, edit: Any, dyn: dict[str, Any]) -> Path:
    path = model / "training_dynamics" / f"dynamics_epoch_{epoch}.jsonl"
    records = _records(dyn, epoch)
    records = edit(records) or records
    write_jsonl(path, records)
    return path


def _set(i: int, key: str, value: Any) -> Any:
    def edit(records: list[dict[str, Any]]) -> None:
        records[i][key] = value
    return edit


def _drop_key(key: str) -> Any:
    def edit(records: list[dict[str, Any]]) -> None:
        for r in records:
            r.pop(key)
    return edit


BAD_CASES: dict[str, tuple[int, Any, str]] = {
    # name: (epoch file to break, edit of its records, expected message part)
    "missing gold field": (1, _drop_key("gold"), "missing field 'gold'"),
    "missing guid field": (0, _drop_key("guid"), "missing field 'guid'"),
    "logits under other epoch's name": (2, lambda rs: [{"guid": r["guid"], "logits_epoch_1": r["logits_epoch_2"],
                                                         "gold": r["gold"]} for r in rs],
                                        "missing field 'logits_epoch_2'"),
    "null gold in one record": (1, _set(3, "gold", None), "field 'gold' missing or null in 1 record(s)"),
    "ragged logits": (1, _set(2, "logits_epoch_1", [0.1, 0.2]), "unequal length: record 3"),
    "one class": (0, lambda rs: [dict(r, logits_epoch_0=[1.0]) for r in rs], "at least 2 classes"),
    "NaN literal": (1, _set(4, "logits_epoch_1", [0.0, float("nan"), 1.0]), "NaN/inf) for guid"),
    "Infinity literal": (2, _set(0, "logits_epoch_2", [float("inf"), 0.0, 1.0]), "NaN/inf) for guid"),
    "NaN written as null (pandas)": (1, _set(4, "logits_epoch_1", [0.0, None, 1.0]), "(written as null) for guid"),
    "gold out of range": (0, _set(5, "gold", 3), "gold label 3 of guid"),
    "negative gold": (1, _set(5, "gold", -1), "gold label -1 of guid"),
    "non-integer gold": (0, _set(5, "gold", 1.5), "field 'gold' must hold integer"),
    "gold changes across epochs": (2, lambda rs: [*rs[:6], dict(rs[6], gold=(rs[6]["gold"] + 1) % 3), *rs[7:]],
                                   "gold label of guid"),
    "duplicate guid in epoch 0": (0, lambda rs: [*rs[:-1], dict(rs[-1], guid=rs[0]["guid"])], "duplicate guid"),
    "duplicate guid in later epoch": (1, lambda rs: [*rs[:-1], dict(rs[-1], guid=rs[1]["guid"])],
                                      "duplicate guid"),
    "guid missing from an epoch": (2, lambda rs: rs[:-1], "guid(s) of epoch 0 (dynamics_epoch_0.jsonl) missing"),
    "extra guid in an epoch": (1, lambda rs: [*rs, dict(rs[0], guid=10_000)], "guid 10000 (record 13) is not in "
                                                                              "epoch 0"),
    "guid type changes": (1, lambda rs: [dict(r, guid=str(r["guid"])) for r in rs], "guids are str here but int"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_through_cli(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    epoch, edit, expected = BAD_CASES[case]
    dyn = make_dynamics(n=12, epochs=3)
    model = write_model(tmp_path / "model", dyn, shuffle=False)
    bad_file = _rewrite(model, epoch, edit, dyn)
    run = tmp_path / "runs" / "new" / "run"
    code, out, err = run_cli(["import", "cartography", model, run], capsys)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert f"error: {bad_file}: " in err, err
    assert expected in err, err
    assert not (tmp_path / "runs").exists()  # nothing created, not even the parent folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_gold_change_message_names_guid_and_values(tmp_path: Path) -> None:
    dyn = make_dynamics(n=12, epochs=3)
    model = write_model(tmp_path / "model", dyn, shuffle=True)
    path = model / "training_dynamics" / "dynamics_epoch_2.jsonl"
    records = read_jsonl(path)
    records[4]["gold"] = (records[4]["gold"] + 1) % 3
    write_jsonl(path, records)
    guid = records[4]["guid"]
    with pytest.raises(SoiError, match=rf"gold label of guid {guid} is {records[4]['gold']} here but "):
        import_cartography(model, tmp_path / "run")


@pytest.mark.parametrize("case", ["gap", "no files", "malformed line", "empty file", "labels mismatch"])
def test_bad_layout_through_cli(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    dyn = make_dynamics(n=6, epochs=4)
    model = write_model(tmp_path / "model", dyn)
    td = model / "training_dynamics"
    extra: list[str] = []
    if case == "gap":
        (td / "dynamics_epoch_2.jsonl").unlink()
        where, expected = td, "epoch(s) 2 missing (no dynamics_epoch_2.jsonl)"
    elif case == "no files":
        for p in td.iterdir():
            p.unlink()
        where, expected = td, "no dynamics_epoch_<E>.jsonl files"
    elif case == "malformed line":
        where = td / "dynamics_epoch_1.jsonl"
        lines = where.read_text().splitlines()
        lines[3] = lines[3][:-5]
        where.write_text("\n".join(lines) + "\n")
        expected = "cannot parse as JSON lines"
    elif case == "empty file":
        where = td / "dynamics_epoch_3.jsonl"
        where.write_text("")
        expected = "cannot parse as JSON lines: Empty JSON file"
    else:
        where, expected = td / "dynamics_epoch_0.jsonl", "2 label name(s) given but the logits have 3 classes"
        extra = ["--labels", "yes,no"]
    code, _, err = run_cli(["import", "cartography", model, tmp_path / "run", *extra], capsys)
    assert code == 2
    assert err.count("\n") == 1 and f"error: {where}: " in err and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_real_process_exit_code_and_summary(tmp_path: Path) -> None:
    dyn = make_dynamics(n=6, epochs=2)
    model = write_model(tmp_path / "model", dyn)
    cmd = [sys.executable, "-m", "soi.cli.main", "import", "cartography", str(model), str(tmp_path / "run")]
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "imported 6 examples x 2 epochs x 3 classes" in ok.stdout
    _rewrite(model, 1, _set(0, "logits_epoch_1", [1.0, 2.0]), dyn)
    cmd[-1] = str(tmp_path / "run2")
    bad = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "dynamics_epoch_1.jsonl" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "run2").exists()


# ------------------------------------------------------------------------------------------ properties

_LOGIT = st.one_of(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), st.floats(-30, 30, allow_nan=False, width=32))


@st.composite
def _dynamics(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, bool]:
    n = draw(st.integers(1, 6))
    epochs = draw(st.integers(1, 5))
    classes = draw(st.integers(2, 4))
    logits = draw(arrays(np.float64, (epochs, n, classes), elements=_LOGIT))
    gold = draw(arrays(np.int64, n, elements=st.integers(0, classes - 1)))
    include_ci = epochs >= 2 and draw(st.booleans())
    return logits, gold, include_ci


@settings(max_examples=150, deadline=None)
@given(_dynamics())
def test_property_metrics_equal_reference(case: tuple[np.ndarray, np.ndarray, bool]) -> None:
    logits, gold, include_ci = case
    rows = [rows_from_logits(z, gold) for z in logits]
    p_gold = np.stack([r["p_gold"] for r in rows], axis=1)
    correct = np.stack([r["pred"] for r in rows], axis=1) == gold[:, None]
    got = all_metrics(p_gold, correct, include_ci=include_ci)
    ref = reference_metrics({i: {"gold": int(gold[i]), "logits": [z[i].tolist() for z in logits]}
                             for i in range(gold.size)}, include_ci=include_ci)
    for col in METRIC_COLUMNS:
        np.testing.assert_allclose(np.asarray(got[col], float), ref[col].to_numpy(float), rtol=0, atol=1e-6,
                                   err_msg=col)


@settings(max_examples=12, deadline=None)
@given(_dynamics(), st.integers(0, 2**32 - 1))
def test_property_files_round_trip(case: tuple[np.ndarray, np.ndarray, bool], seed: int) -> None:
    logits, gold, include_ci = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dyn = {"logits": logits, "gold": gold, "ids": [int(x) * 3 for x in range(gold.size)]}
        model = write_model(root / "model", dyn, seed=seed)
        run = import_cartography(model, root / "run")
        export_cartography(run, root / "out", include_ci=include_ci)
        original = read_training_dynamics(model)
        got = pd.read_json(root / "out" / "td_metrics.jsonl", lines=True)
        assert_matches_reference(got, reference_metrics(original, include_ci=include_ci))
        assert read_examples(run)["example_id"].to_pylist() == [str(g) for g in original]
