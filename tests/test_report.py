"""``soi report``: data collection values, one-file HTML, JSON round trip, escaping, inputs and errors.

``build_study`` writes a small study directory the way ``soi run`` lays it out (simulated runs instead of
training, real ``analyze_run`` / ``compare`` outputs, a hand-written ``summary.json`` with the two-stage and
transfer sections); the browser tests (tests/test_report_browser.py) reuse it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from report_common import report_fixtures
from soi.analysis.categories import SOI_CATEGORIES
from soi.analysis.per_example import analyze_run
from soi.errors import SoiError
from soi.report import read_report_data, write_report
from soi.report.data import collect, decode_column, discover, encode_column, quantise
from soi.report.html import embed_json, render_html
from soi.simulate import simulate_run
from soi.store import read_examples, write_examples

N = 240
SEEDS = (0, 1)
RUNS = {"single-a": "single", "multi": "multi-task"}
XSS = '</script><script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2">'
WORDS = ("river", "Garden", "piano", "cloud", "ember")


def example_texts(n: int) -> list[str]:
    """Deterministic texts: a word per example, one script-injection attempt, a few non-ASCII ones."""
    texts = [f"Example {i}: the {WORDS[i % len(WORDS)]} & more <b>bold</b>" for i in range(n)]
    texts[3] = XSS
    texts[7] = "unicode \u2028 line separator, caf\u00e9 \u4e2d\u6587"
    return texts


def add_texts(run: Path) -> None:
    ex = read_examples(run)
    texts = example_texts(ex.num_rows)
    write_examples(run, ex.set_column(ex.column_names.index("text"), "text", pa.array(texts, pa.string())))


def _arm(kind: str, acc: float, lo: float, hi: float) -> dict[str, Any]:
    m = {"mean": acc, "std": 0.01, "ci95": [lo, hi], "values": [acc - 0.01, acc + 0.01]}
    return {"kind": kind, "n_train": 90, "dirs": [],
            "eval": {"a-test": {"kind": "in-distribution", "accuracy": m, "macro_f1": dict(m, mean=acc - 0.01)}}}


TWO_STAGE = {"experiments": [{
    "name": "forgettable-stage2", "from_run": "single-a", "rule": "soi in (forgettable_lost, never_learned)",
    "stage2_epochs": 1, "stage2_steps": 40,
    "arms": {"soi": _arm("soi", 0.81, 0.79, 0.83), "random": _arm("random", 0.78, 0.75, 0.81)},
    "differences": [{"arm": "soi", "control": "random", "eval": "a-test", "metric": "accuracy", "mean": 0.03,
                     "ci95": [0.01, 0.05], "values": [0.03, 0.03]}],
}]}

TRANSFER = {"gsm": {
    "metric": "exact_match", "ks": [0, 8, 32], "seen": ["en", "de"], "unseen": ["sw"],
    "scores": {lang: {str(k): {"mean": base + 0.004 * k, "std": 0.01, "values": [base + 0.004 * k]}
                      for k in (0, 8, 32)} for lang, base in (("en", 0.5), ("de", 0.4), ("sw", 0.1))},
    "gain": {lang: {str(k): 0.004 * k for k in (0, 8, 32)} for lang in ("en", "de", "sw")},
    "relative_gain": {}, "gain_per_100": {},
    "seen_mean": {"0": 0.45, "8": 0.482, "32": 0.578}, "unseen_mean": {"0": 0.1, "8": 0.132, "32": 0.228},
    "gap": {"0": 0.35, "8": 0.35, "32": 0.35},
}}


def build_study(root: Path, *, n: int = N, texts: bool = True, extras: bool = True) -> Path:
    """A study directory like ``soi run`` writes (runs/<run>/seed-<s>, compare/<a>__vs__<b>/seed-<s>, summary.json)."""
    from soi.cli.compare import compare

    groups = {"task": ["a", "b"], "language": ["en", "de"]}
    analyses: dict[str, list[dict[str, Any]]] = {}
    for name, setting in RUNS.items():
        analyses[name] = []
        for s in SEEDS:
            run = simulate_run(root / "runs" / name / f"seed-{s}", n=n, checkpoints=5, seed=10 * s + len(name),
                               skill=1.0 if setting == "single" else 1.4, groups=groups, difficulty_seed=7,
                               setting=setting)
            if texts:
                add_texts(run)
            analyses[name].append(analyze_run(run).summary)
    comparisons = []
    for s in SEEDS:
        out = root / "compare" / "single-a__vs__multi" / f"seed-{s}"
        with contextlib.redirect_stdout(io.StringIO()):
            compare(run_a=root / "runs" / "single-a" / f"seed-{s}", run_b=root / "runs" / "multi" / f"seed-{s}",
                    out=out, group_by=None, late_fraction=0.5, n_boot=200, seed=s, label_a="single-a",
                    label_b="multi")
        comparisons.append({"a": "single-a", "b": "multi", "seed": s, "dir": str(out)})

    def mean_std(values: list[float]) -> dict[str, Any]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "values": values}

    runs = {}
    for i, (name, setting) in enumerate(RUNS.items()):
        shares = {key: {g: {c: float(np.mean([a["groups"][key][g]["shares"][c] for a in analyses[name]]))
                            for c in SOI_CATEGORIES} for g in analyses[name][0]["groups"][key]}
                  for key in analyses[name][0]["groups"]}
        runs[name] = {
            "setting": setting, "train": ["a", "b"] if setting != "single" else ["a"], "seeds": list(SEEDS),
            "dirs": [str(root / "runs" / name / f"seed-{s}") for s in SEEDS],
            "eval": {"a-test": {"dataset": "a", "split": "test", "task": "a", "kind": "in-distribution", "n": 100,
                                "accuracy": mean_std([0.7 + 0.05 * i, 0.72 + 0.05 * i]),
                                "macro_f1": mean_std([0.68 + 0.05 * i, 0.7 + 0.05 * i]),
                                "languages": {"en": {"n": 50, "accuracy": mean_std([0.75, 0.77]),
                                                     "macro_f1": mean_std([0.74, 0.76])}}},
                     "ood-test": {"dataset": "ood", "split": "test", "task": "a", "kind": "ood", "n": 80,
                                  "accuracy": mean_std([0.6 + 0.03 * i, 0.64]),
                                  "macro_f1": mean_std([0.58, 0.6]), "languages": {}}},
            "soi_shares": shares,
            "train_accuracy_final": mean_std([a["groups"]["all"]["all"]["final_accuracy"] for a in analyses[name]]),
        }
    summary: dict[str, Any] = {"study": "toy-study", "model": "simulated", "seeds": list(SEEDS), "data_seed": 0,
                               "out": str(root), "runs": runs, "comparisons": comparisons}
    if extras:
        summary["two_stage"] = TWO_STAGE
        summary["transfer"] = TRANSFER
        summary["transfer_stats"] = {"gsm": transfer_stats_of(TRANSFER["gsm"])}  # a classification k_grid family
    (root / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return root


def transfer_stats_of(t: dict[str, Any], n_items: int = 40, n_seeds: int = 2) -> dict[str, Any]:
    """``transfer_statistics`` of per-item correctness drawn around the scores of a ``transfer`` entry."""
    from soi.analysis.transfer import transfer_statistics

    rng = np.random.default_rng(3)
    p = {lang: np.array([t["scores"][lang][str(k)]["mean"] for k in t["ks"]]) for lang in t["scores"]}
    x = {lang: (rng.random((len(t["ks"]), n_seeds, n_items)) < v[:, None, None]).astype(float) for lang, v in p.items()}
    return transfer_statistics(x, t["ks"], seen=t["seen"], unseen=t["unseen"], metric=t["metric"], n_boot=200)


study, report, data = report_fixtures(build_study, "study", "toy")


# ----------------------------------------------------------------------------------------------- encoding


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=200))
def test_float_column_round_trip_within_quantisation(values: list[float]) -> None:
    arr = np.asarray(values, np.float64)
    col = encode_column(arr)
    back = decode_column(json.loads(json.dumps(col)))
    assert back.shape == arr.shape
    if arr.size:
        span = arr.max() - arr.min()
        assert np.all(np.abs(back - arr) <= span / 131070 * (1 + 1e-9) + 1e-12 * max(1.0, abs(arr).max()))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=100))
def test_int_column_round_trip_exact(values: list[int]) -> None:
    col = encode_column(np.asarray(values, np.int64), kind="int")
    assert decode_column(col).tolist() == values
    top = max(values, default=0)
    assert col["dtype"] == ("u8" if top < 256 else "u16" if top < 65536 else "u32")


def test_encode_fixed_range_and_nonfinite() -> None:
    col = encode_column(np.array([0.0, 0.5, 1.0, np.nan]), lo=0.0, hi=1.0)
    assert (col["lo"], col["hi"]) == (0.0, 1.0)
    np.testing.assert_allclose(decode_column(col), [0.0, 32768 / 65535, 1.0, 0.0])
    with pytest.raises(SoiError, match="non-negative"):
        encode_column(np.array([-1]), kind="int")


def test_quantise_rounds_to_significant_digits() -> None:
    out = quantise({"a": 0.123456, "b": [1234567.0, 1e-12 / 3], "c": 3, "d": True, "e": float("nan"),
                    "f": np.float32(2.5), "g": "x"})
    assert out == {"a": 0.1235, "b": [1235000.0, 3.333e-13], "c": 3, "d": True, "e": None, "f": 2.5, "g": "x"}


def test_embed_json_escapes_script_breakers() -> None:
    payload = {"t": "</script><!-- & \u2028 \u2029 >"}
    text = embed_json(payload)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == payload


# ----------------------------------------------------------------------------------------------- collection


def test_discover_study_runs_and_comparisons(study: Path) -> None:
    layout = discover(study)
    assert layout.kind == "study"
    assert [(r.name, r.seed) for r in layout.runs] == [("single-a", 0), ("single-a", 1), ("multi", 0), ("multi", 1)]
    assert [(c.a, c.b, c.seed) for c in layout.comparisons] == [("single-a", "multi", 0), ("single-a", "multi", 1)]
    assert layout.notes == []


def test_group_counts_equal_the_analysis_files(study: Path, data: dict[str, Any]) -> None:
    for r in data["runs"]:
        summary = json.loads((study / r["dir"] / "analysis" / "summary.json").read_text())
        assert r["n_examples"] == summary["n_examples"] == N
        for key in ("all", "task", "language"):
            for g, ref in summary["groups"][key].items():
                mine = r["groups"][key][g]
                assert mine["n"] == ref["n"]
                assert mine["counts"] == [ref["counts"][c] for c in SOI_CATEGORIES]
                np.testing.assert_allclose(mine["shares"], [ref["shares"][c] for c in SOI_CATEGORIES], rtol=1e-3)
                assert mine["final_accuracy"] == pytest.approx(ref["final_accuracy"], rel=1e-3)
        assert r["accuracy_per_checkpoint"] == pytest.approx(summary["accuracy_per_checkpoint"], rel=1e-3)


def test_setting_shares_equal_the_study_summary(study: Path, data: dict[str, Any]) -> None:
    summary = json.loads((study / "summary.json").read_text())
    by_name = {s["name"]: s for s in data["settings"]}
    assert list(by_name) == list(summary["runs"])
    for name, run in summary["runs"].items():
        for key, groups in run["soi_shares"].items():
            for g, shares in groups.items():
                np.testing.assert_allclose(by_name[name]["shares"][key][g], [shares[c] for c in SOI_CATEGORIES],
                                           rtol=1e-3, atol=1e-12)
        assert by_name[name]["eval"]["a-test"]["accuracy"]["mean"] == pytest.approx(
            run["eval"]["a-test"]["accuracy"]["mean"], rel=1e-3)
        assert by_name[name]["seeds"] == list(SEEDS)


def test_examples_columns_equal_per_example_parquet(study: Path, data: dict[str, Any]) -> None:
    ex = data["examples"]
    assert ex["n"] == ex["n_total"] == 4 * N
    cols = {k: decode_column(v) for k, v in ex["columns"].items()}
    for r in data["runs"]:
        t = pq.read_table(study / r["dir"] / "analysis" / "per_example.parquet")
        rows = slice(r["row_start"], r["row_start"] + r["n_shown"])
        assert (cols["run"][rows] == r["id"]).all()
        assert ex["ids"][rows] == t["example_id"].to_pylist()
        soi = [SOI_CATEGORIES[i] for i in cols["soi"][rows]]
        assert soi == t["soi"].cast(pa.string()).to_pylist()
        assert cols["correct"][rows].astype(bool).tolist() == t["final_correct"].to_pylist()
        for key, column in (("language", "language"), ("task", "task"), ("gold", "gold_label")):
            names = [ex["dicts"][key][i] for i in cols[key][rows]]
            assert names == t[column].cast(pa.string()).to_pylist()
        for m in ("confidence", "variability", "correctness_frac", "aum", "mean_loss"):
            ref = t[m].to_numpy()
            col = ex["columns"][m]
            np.testing.assert_allclose(cols[m][rows], ref, atol=(col["hi"] - col["lo"]) / 131070 + 1e-12)
        assert cols["forgetting_events"][rows].tolist() == t["forgetting_events"].to_pylist()
        assert ex["text"][rows] == t["text"].to_pylist()  # short texts: not truncated


def test_traces_are_the_stored_gold_probabilities(study: Path, data: dict[str, Any]) -> None:
    from soi.store import load_dynamics

    trace = decode_column(data["examples"]["trace"])
    for r in data["runs"]:
        dyn = load_dynamics(study / r["dir"])
        e = r["trace_checkpoints"]
        assert e == dyn.n_checkpoints == 5
        mine = trace[r["trace_start"]: r["trace_start"] + r["n_shown"] * e].reshape(r["n_shown"], e)
        np.testing.assert_allclose(mine, dyn.p_gold, atol=1 / 131070 + 1e-7)


def test_comparisons_carry_the_stats(study: Path, data: dict[str, Any]) -> None:
    assert len(data["comparisons"]) == 2
    for c in data["comparisons"]:
        stats = json.loads((study / c["dir"] / "stats.json").read_text())
        assert (c["a"], c["b"]) == ("single-a", "multi")
        for mine, ref in zip(c["groups"], stats["groups"], strict=True):
            assert (mine["key"], mine["group"], mine["counts"]) == (ref["key"], ref["group"], ref["counts"])
            assert mine["significant"] == [ref["share_change"][cat]["significant"] for cat in SOI_CATEGORIES]
            assert mine["mcnemar_p"] == pytest.approx(ref["mcnemar"]["p_value"], rel=1e-3)


def test_max_examples_samples_per_run_but_counts_use_everything(study: Path) -> None:
    d = collect(study, max_examples=100)
    assert d["examples"]["n"] == sum(r["n_shown"] for r in d["runs"]) == 100
    assert d["examples"]["n_total"] == 4 * N
    assert [r["n_shown"] for r in d["runs"]] == [25, 25, 25, 25]
    assert all(r["groups"]["all"]["all"]["n"] == N for r in d["runs"])
    again = collect(study, max_examples=100)
    assert again["examples"]["ids"] == d["examples"]["ids"]  # seeded
    # the sampled rows keep their own traces
    full = collect(study)
    trace, full_trace = decode_column(d["examples"]["trace"]), decode_column(full["examples"]["trace"])
    first_run_ids = full["examples"]["ids"][:N]  # run 0 holds the first N rows of the full page
    for k in range(d["runs"][0]["n_shown"]):
        j = first_run_ids.index(d["examples"]["ids"][k])
        np.testing.assert_array_equal(trace[5 * k: 5 * k + 5], full_trace[5 * j: 5 * j + 5])


# ----------------------------------------------------------------------------------------------- the page


def test_html_is_one_file_without_external_resources(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"<(?:link|iframe|object|embed)\b", text, re.I)
    assert not re.search(r"<script[^>]+src=", text, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", text, re.I)
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert text.count("<script") == 2 and text.count("</script>") == 2  # data + code, nothing injected
    assert XSS not in text and "<script>window.__xss" not in text  # escaped (\u003c...) inside the JSON
    assert "\\u003c/script\\u003e\\u003cscript\\u003ewindow.__xss = 1" in text


def test_json_round_trips_and_keeps_the_texts(report: Path, data: dict[str, Any]) -> None:
    assert data["format"] == "soi-report" and data["kind"] == "study" and data["title"] == "toy-study"
    assert XSS in data["examples"]["text"]
    assert "unicode \u2028 line separator, caf\u00e9 \u4e2d\u6587" in data["examples"]["text"]
    assert data["two_stage"]["experiments"][0]["name"] == "forgettable-stage2"
    assert data["transfer"]["gsm"]["ks"] == [0, 8, 32]
    st = json.loads((report.parent / "summary.json").read_text(encoding="utf-8"))["transfer_stats"]["gsm"]
    for lang in ("en", "de", "sw"):  # embedded (quantised) as summary.json has it
        got, want = data["transfer_stats"]["gsm"]["languages"][lang]["gain"]["32"], st["languages"][lang]["gain"]["32"]
        assert got["significant"] == want["significant"]
        assert [got[f] for f in ("mean", "lo", "hi")] == pytest.approx([want[f] for f in ("mean", "lo", "hi")],
                                                                        abs=1e-4)
    assert data["group_keys"] == ["task", "language"]
    assert json.loads(json.dumps(data)) == data


def test_figures_written(study: Path, data: dict[str, Any]) -> None:
    names = sorted(Path(f).name for f in data["figures"])
    assert names == ["datamap_multi.png", "datamap_single-a.png", "eval.png", "soi_shares_all.png",
                     "soi_shares_language.png", "soi_shares_task.png", "stability.png", "transfer_gsm_curves.png",
                     "transfer_gsm_heatmap.png", "transfer_gsm_intervals.png",
                     "transitions_single-a__vs__multi_seed-0.png", "transitions_single-a__vs__multi_seed-1.png",
                     "two_stage_forgettable-stage2.png"]
    for f in data["figures"]:
        assert (study / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_texts_are_truncated(tmp_path: Path) -> None:
    run = simulate_run(tmp_path / "run", n=5, checkpoints=3, seed=1)
    ex = read_examples(run)
    write_examples(run, ex.set_column(ex.column_names.index("text"), "text", pa.array(["x" * 1000] * 5)))
    d = collect(run)
    assert d["kind"] == "run" and d["runs"][0]["analysed_on_the_fly"]
    assert all(len(t) == 240 and t.endswith("\u2026") for t in d["examples"]["text"])


def test_render_uses_assets_and_data() -> None:
    page = render_html({"title": "<t>", "soi_version": "1", "x": "{{JS}}"})
    assert "<title>&lt;t&gt; — soi report</title>" in page
    assert '"x":"{{JS}}"' in page  # tokens inside the data are not substituted again
    assert "function decode(" in page


# ----------------------------------------------------------------------------------------------- inputs


def test_demo_layout_without_summary(tmp_path: Path) -> None:
    from soi.cli.compare import compare

    groups = {"task": ["t1", "t2"]}
    a = simulate_run(tmp_path / "runs" / "single", n=80, checkpoints=4, seed=1, difficulty_seed=0, groups=groups,
                     setting="single")
    b = simulate_run(tmp_path / "runs" / "multi", n=80, checkpoints=4, seed=2, difficulty_seed=0, groups=groups,
                     setting="multi")
    for r in (a, b):
        analyze_run(r)
    with contextlib.redirect_stdout(io.StringIO()):
        compare(run_a=a, run_b=b, out=tmp_path / "compare", group_by=None, late_fraction=0.5, n_boot=100, seed=0,
                label_a=None, label_b=None)
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    (broken / "run.json").write_text('{"tasks": {"t": ["a"]}}')  # no examples.parquet
    out = write_report(tmp_path, figures=False)
    d = read_report_data(out)
    assert d["kind"] == "runs" and d["study"] == {}
    assert len(d["notes"]) == 1 and d["notes"][0].startswith("run broken skipped: ")
    assert "examples.parquet" in d["notes"][0]
    assert [(r["name"], r["setting"]) for r in d["runs"]] == [("single", "single"), ("multi", "multi")]
    assert [(c["a"], c["b"], c["dir"]) for c in d["comparisons"]] == [("single", "multi", "compare")]
    assert d["group_keys"] == ["task"]  # source == task and one language: not repeated
    assert not (tmp_path / "figures").exists()


def transfer_only_study(root: Path) -> Path:
    """A generative study's shape: runs without recorded dynamics, a transfer section."""
    root.mkdir(parents=True)
    (root / "runs" / "mix-k8" / "seed-0").mkdir(parents=True)  # a run folder without run.json
    summary = {"study": "gen", "model": "tiny", "seeds": [0], "out": str(root),
               "runs": {"mix-k8": {"setting": "multi-lingual", "k": 8, "seeds": [0],
                                   "dirs": [str(root / "runs" / "mix-k8" / "seed-0")],
                                   "eval": {"gsm-sw": {"exact_match": {"mean": 0.2, "std": 0.0, "values": [0.2]}}}}},
               "comparisons": [], "transfer": TRANSFER}
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


def test_study_without_dynamics(tmp_path: Path) -> None:
    out = write_report(transfer_only_study(tmp_path / "gen"))
    d = read_report_data(out)
    assert d["runs"] == [] and d["examples"]["n"] == 0 and d["comparisons"] == []
    assert d["notes"] == ["run mix-k8 seed 0: no recorded dynamics (no run.json)"]
    assert d["settings"][0]["eval"]["gsm-sw"]["exact_match"]["mean"] == 0.2
    assert sorted(Path(f).name for f in d["figures"]) == ["transfer_gsm_curves.png", "transfer_gsm_heatmap.png"]


def test_run_dir_out_option_and_figures_beside_it(sim_run: Path, tmp_path: Path) -> None:
    out = write_report(sim_run, tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html"
    d = read_report_data(out)
    assert d["kind"] == "run" and len(d["runs"]) == 1 and d["comparisons"] == []
    assert all((out.parent / f).is_file() for f in d["figures"]) and d["figures"][0].startswith("figures/")
    assert not (sim_run / "analysis").exists()  # analysed in memory, the run is not modified


@pytest.mark.parametrize("case", ["missing", "file", "empty", "bad-summary", "summary-not-object", "bad-run"])
def test_bad_input_is_one_line_error(tmp_path: Path, case: str) -> None:
    target = tmp_path / "x"
    if case == "file":
        target.write_text("hi")
    elif case == "empty":
        target.mkdir()
    elif case == "bad-summary":
        target.mkdir()
        (target / "summary.json").write_text("{not json")
    elif case == "summary-not-object":
        target.mkdir()
        (target / "summary.json").write_text("[1, 2]")
    elif case == "bad-run":
        target.mkdir()
        (target / "run.json").write_text('{"tasks": {"t": ["a", "b"]}, "bogus": 1}')
    with pytest.raises(SoiError) as info:
        write_report(target)
    assert "\n" not in str(info.value) and str(target) in str(info.value)


def test_cli_report(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.html"
    proc = subprocess.run([sys.executable, "-m", "soi.cli.main", "report", str(study), "--out", str(out),
                           "--max-examples", "50", "--no-figures"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout.replace("\n", "") and "960 examples (48 sampled" in proc.stdout
    assert read_report_data(out)["examples"]["n"] == 48  # 4 runs x floor(50 / 4)
    bad = subprocess.run([sys.executable, "-m", "soi.cli.main", "report", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
