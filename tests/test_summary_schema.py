"""The typed summary.json schema (soi.store.summary): valid summaries pass, a bad field is a one-line error naming
it; the report and the tables read through it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from soi.errors import SoiError
from soi.store.summary import (
    SCHEMA_VERSION,
    ClassificationSummary,
    GenerativeSummary,
    load_summary,
    summary_type,
    validate_summary,
)


def ms(*values: float) -> dict[str, Any]:
    return {"mean": sum(values) / len(values), "std": 0.0, "values": list(values)}


def stats(*values: float) -> dict[str, Any]:
    return ms(*values) | {"ci95": None}


def classification() -> dict[str, Any]:
    """A complete classification summary with every optional section (what soi run writes, by hand)."""
    ev = {"dataset": "sst2", "split": "validation", "task": "sentiment", "kind": "in-distribution", "n": 10,
          "accuracy": ms(0.8), "macro_f1": ms(0.7), "languages": {"en": {"n": 10, "accuracy": ms(0.8),
                                                                         "macro_f1": ms(0.7)}}}
    run = {"setting": "single", "train": ["sst2"], "k": None, "family": None, "n_train": 32,
           "train_sizes": {"sst2": 32}, "match_size": None, "seeds": [0], "dirs": ["runs/a/seed-0"],
           "eval": {"sst2": ev},
           "soi_shares": {"all": {"all": {"easy": 0.5, "hard": 0.5}}}, "train_accuracy_final": ms(0.9)}
    group = {"key": "all", "group": "all", "n_shared": 32, "accuracy_a": 0.9, "accuracy_b": 0.8,
             "data": "training dynamics", "mcnemar_p": 0.5, "mcnemar_method": "exact",
             "stability": {"a": {"agreement": None, "kappa": None}},
             "seed_null": {"p_value": None, "statistic": None, "method": None, "significant": False, "note": "1 seed"},
             "excess_transitions": [{"from": "easy", "to": "hard", "observed": 0.2, "null": 0.1, "excess": 0.1,
                                     "lo": None, "hi": None, "q_value": None, "significant": False}],
             "significant_transitions": [],
             "biggest_share_changes": [{"category": "easy", "change": -0.1, "lo": -0.2, "hi": 0.0,
                                        "significant": False}]}
    comp = {"a": "a", "b": "b", "seed": None, "dir": "compare/a__vs__b", "seeds": {"a": [0], "b": [0]},
            "n_shared": 32, "n_only_a": 0, "n_only_b": 3, "notes": [], "groups": [group],
            "test_set": {"sst2": {"data": "test set", "n_items": 10, "note": None, "accuracy_a": 0.8,
                                  "accuracy_b": 0.7, "difference": -0.1, "lo": -0.3, "hi": 0.1, "level": 0.95,
                                  "significant": False, "mcnemar_p": 0.6, "mcnemar_p_per_seed": [0.6]},
                         "mrpc": {"data": "test set", "n_items": 0, "note": "no shared items"}}}
    transfer = {"metric": "accuracy", "ks": [0, 4], "seen": ["es"], "unseen": ["de"],
                "scores": {"es": {"0": ms(0.5), "4": ms(0.6)}}, "gain": {"es": {"0": 0.0, "4": 0.1}},
                "relative_gain": {"es": {"0": 0.0, "4": 0.2}}, "gain_per_100": {"es": {"0": None, "4": 2.5}},
                "seen_mean": {"0": 0.5, "4": 0.6}, "unseen_mean": {"0": None, "4": None}, "gap": {"0": None, "4": None}}
    arm = {"kind": "soi", "n_train": 8, "n_train_values": [8], "dirs": ["two_stage/a/r/soi/seed-0"],
           "eval": {"sst2": {"kind": "in-distribution", "accuracy": stats(0.8), "macro_f1": stats(0.7)}}}
    exp = {"name": "a/r", "from_run": "a", "rule": "hard examples", "rule_name": "r", "stage2_epochs": 1,
           "stage2_steps": 4, "stage2_steps_values": [4], "seeds": [0], "stage1_seeds": [0], "arms": {"soi": arm},
           "differences": [{"arm": "soi", "control": "random", "eval": "sst2", "metric": "accuracy", "mean": 0.1,
                            "ci95": None, "values": [0.1]}], "notes": ["one stage-2 seed"]}
    matched = {"run": "b", "target": "a", "full": None, "n_train": {"target": 32, "matched": 32, "full": None},
               "effects": [{"effect": "pooling at equal data", "a": "a", "b": "b", "eval_set": "sst2",
                            "kind": "in-distribution", "data": "test set", "accuracy_a": 0.7, "accuracy_b": 0.8,
                            "difference": 0.1, "lo": None, "hi": None, "significant": None, "mcnemar_p": None}]}
    return {"schema_version": SCHEMA_VERSION, "study": "s", "model": "m", "seeds": [0], "data_seed": 0, "out": "o",
            "runs": {"a": run, "b": copy.deepcopy(run)}, "comparisons": [comp], "findings": ["a -> b: none."],
            "data_matched": [matched], "transfer": {"fam": transfer}, "two_stage": {"experiments": [exp]}}


def generative() -> dict[str, Any]:
    lang = {"n": 3, "group": "seen", "exact_match": ms(1 / 3)}
    run = {"setting": "single", "run": "math", "k": 2, "tasks": ["math"], "seeds": [0], "dirs": ["runs/math-k2/seed-0"],
           "n_train": {"math": {"en": 4, "es": 2}},
           "eval": {"math": {"kind": "math", "metric": "exact_match", "metrics": ["exact_match"],
                             "languages": {"es": lang}}},
           "best_step": [2], "steps": [2], "soi_shares": {}, "probe_soi_shares": {}}
    return {"schema_version": SCHEMA_VERSION, "type": "generative", "study": "g", "model": "m", "seeds": [0],
            "data_seed": 0, "out": "o", "runs": {"math-k2": run}, "comparisons": [],
            "transfer": {"math": classification()["transfer"]["fam"] | {"metric": "exact_match"}},
            "transfer_runs": {"math": {"run": "math", "task": "math"}}, "figures": []}


def test_complete_summaries_pass_strict_validation() -> None:
    s = classification()
    assert validate_summary(s, strict=True) is s  # returned unchanged
    assert summary_type(s) is ClassificationSummary and summary_type(generative()) is GenerativeSummary
    validate_summary(generative(), strict=True)
    # forward compatible: unknown fields are allowed
    validate_summary(classification() | {"new_section": {"x": 1}}, strict=True)


def _set(data: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(("make", "path", "value", "message"), [
    (classification, ["runs"], [], "runs: expected an object, got a list"),
    (classification, ["runs", "a", "eval", "sst2", "accuracy", "mean"], "0.8",
     "runs.a.eval.sst2.accuracy.mean: expected a number, got str"),
    (classification, ["runs", "a", "n_train"], True, "runs.a.n_train: expected an integer, got bool"),
    (classification, ["runs", "a", "n_train"], 3.5, "runs.a.n_train: expected an integer, got float"),
    (classification, ["runs", "b", "k"], "2", "runs.b.k: expected an integer or null, got str"),
    (classification, ["comparisons", 0, "groups", 0, "excess_transitions", 0, "from"], 3,
     "comparisons[0].groups[0].excess_transitions[0].from: expected a string, got int"),
    (classification, ["comparisons", 0, "test_set", "sst2", "difference"], None,
     "comparisons[0].test_set.sst2.difference: expected a number, got null"),
    (classification, ["data_matched", 0, "effects", 0, "effect"], "less data",
     "data_matched[0].effects[0].effect: expected 'pooling at equal data' or 'more data' or 'pooling with more "
     "data', got 'less data'"),
    (classification, ["two_stage", "experiments", 0, "arms", "soi", "eval", "sst2", "accuracy", "ci95"], [0.1, "x"],
     "two_stage.experiments[0].arms.soi.eval.sst2.accuracy.ci95[1]: expected a number, got str"),
    (classification, ["transfer", "fam", "seen_mean", "4"], "high", "transfer.fam.seen_mean.4: expected a number or "
                                                                    "null, got str"),
    (classification, ["schema_version"], SCHEMA_VERSION + 1,
     f"schema_version: {SCHEMA_VERSION + 1} is newer than this soi reads ({SCHEMA_VERSION}); upgrade soi"),
    (classification, ["schema_version"], "1", "schema_version: expected an integer >= 1, got '1'"),
    (classification, ["type"], "regression", "type: unknown study type 'regression' (classification or generative)"),
    (classification, ["comparisons", 0, "b"], KeyError, "comparisons[0].b: field required"),
    (classification, ["runs"], KeyError, "runs: field required"),
    (generative, ["runs", "math-k2", "eval", "math", "languages", "es", "exact_match", "std"], None,
     "runs.math-k2.eval.math.languages.es.exact_match.std: expected a number, got null"),
    (generative, ["runs", "math-k2", "best_step", 0], "2", "runs.math-k2.best_step[0]: expected an integer or null, "
                                                          "got str"),
    (generative, ["transfer_runs", "math"], "math", "transfer_runs.math: expected an object, got str"),
])
def test_a_bad_field_is_one_line_naming_it(tmp_path: Path, make: Any, path: list[Any], value: Any,
                                           message: str) -> None:
    data = _set(make(), path, value)
    for strict in (False, True):
        with pytest.raises(SoiError) as info:
            validate_summary(data, strict=strict, path="study/summary.json")
        assert str(info.value) == f"study/summary.json: {message}"
    f = tmp_path / "summary.json"
    f.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SoiError, match="^" + str(f)):
        load_summary(f)


@pytest.mark.parametrize(("path", "message"), [
    (["findings"], "findings: field required"),
    (["runs", "a", "train_accuracy_final"], "runs.a.train_accuracy_final: field required"),
    (["comparisons", 0, "test_set", "sst2", "n_items"], "comparisons[0].test_set.sst2.n_items: field required"),
    (["schema_version"], "schema_version: field required"),
])
def test_strict_requires_every_field_lenient_only_the_essential(path: list[Any], message: str) -> None:
    data = _set(classification(), path, KeyError)
    validate_summary(data)  # hand-written and pre-schema_version summaries still read
    with pytest.raises(SoiError) as info:
        validate_summary(data, strict=True)
    assert str(info.value) == message
    # optional sections may be missing even when strict
    validate_summary({k: v for k, v in classification().items() if k not in ("data_matched", "transfer",
                                                                             "two_stage")}, strict=True)
    ts = classification()
    del ts["comparisons"][0]["test_set"]["sst2"]["difference"]  # a test set without a paired difference
    validate_summary(ts, strict=True)


def transfer_stats() -> dict[str, Any]:
    """Real output of soi.analysis.transfer.transfer_statistics (both groups, 3 values of k, 2 seeds)."""
    import numpy as np

    from soi.analysis.transfer import transfer_statistics

    rng = np.random.default_rng(0)
    x = {lang: (rng.random((3, 2, 12)) < p).astype(float) for lang, p in (("en", 0.5), ("es", 0.4), ("de", 0.2))}
    return transfer_statistics(x, [0, 4, 16], seen=["es"], unseen=["de"], metric="accuracy", n_boot=50)


def test_every_field_soi_writes_is_declared() -> None:
    from soi.store.summary import undeclared_fields

    st = transfer_stats()
    cls = classification() | {"transfer_stats": {"fam": copy.deepcopy(st)}}
    gen = generative() | {"transfer_stats": {"math": copy.deepcopy(st)},
                          "models": [{"model": "m", "slug": "m", "parameters": 10, "out": "models/m"}],
                          "by_model": {"math": [{"model": "m", "slug": "m", "parameters": 10, "k": 16,
                                                 "seen": st["groups"]["seen"]["gain"]["16"],
                                                 "unseen": st["groups"]["unseen"]["gain"]["16"],
                                                 "gap": st["gap"]["16"]}]},
                          "multitask": {"both:math": {"data": "test set", "task": "math", "single": "math",
                                                      "multi": "both", "metric": "exact_match", "level": 0.95,
                                                      "n_seeds": 2, "notes": [], "method": "multi - single",
                                                      "k": {"4": {"es": {"group": "seen",
                                                                         "single": st["languages"]["es"]["score"]["0"],
                                                                         "multi": st["languages"]["es"]["score"]["4"],
                                                                         "difference": st["languages"]["es"]["gain"]
                                                                         ["4"]}}}}}}
    for s in (cls, gen):
        validate_summary(s, strict=True)
        assert undeclared_fields(s) == []
    cls["runs"]["a"]["eval"]["sst2"]["languages"]["en"]["recall"] = 0.5
    cls["transfer_stats"]["fam"]["languages"]["es"]["plateau"]["extra"] = 1  # inside a Plateau | None
    gen["by_model"]["math"][0]["seen"]["p"] = 0.01  # inside a FlaggedInterval | None
    assert undeclared_fields(cls) == ["runs.a.eval.sst2.languages.en.recall",
                                      "transfer_stats.fam.languages.es.plateau.extra"]
    assert undeclared_fields(gen) == ["by_model.math[0].seen.p"]
    bad = copy.deepcopy(cls)
    bad["transfer_stats"]["fam"]["gap"]["4"]["significant"] = "yes"
    with pytest.raises(SoiError, match=r"^transfer_stats\.fam\.gap\.4\.significant: expected true or false, got str$"):
        validate_summary(bad)


def test_load_summary_unreadable_files(tmp_path: Path) -> None:
    f = tmp_path / "summary.json"
    f.write_text("{not json", encoding="utf-8")
    with pytest.raises(SoiError, match=r"summary.json: cannot read JSON \(JSONDecodeError"):
        load_summary(f)
    f.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(SoiError, match="summary: expected a JSON object, got a list"):
        load_summary(f)
    with pytest.raises(SoiError, match="cannot read JSON"):
        load_summary(tmp_path / "missing.json")
    f.write_text(json.dumps(classification()), encoding="utf-8")
    assert load_summary(f, strict=True) == classification()


def test_the_report_and_the_tables_read_through_the_schema(tmp_path: Path) -> None:
    from soi.report import write_report
    from soi.study.tables import rebuild_tables, write_tables

    bad = _set(classification(), ["runs", "a", "eval", "sst2", "n"], "ten")
    (tmp_path / "summary.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(SoiError) as info:
        write_report(tmp_path)
    assert str(info.value) == f"{tmp_path / 'summary.json'}: runs.a.eval.sst2.n: expected an integer, got str"
    with pytest.raises(SoiError, match=r"runs\.a\.eval\.sst2\.n: expected an integer, got str"):
        write_tables(bad, tmp_path)  # type: ignore[arg-type]
    assert not (tmp_path / "tables").exists()  # nothing written
    good = classification()
    (tmp_path / "summary.json").write_text(json.dumps(good), encoding="utf-8")
    paths = rebuild_tables(tmp_path)
    assert paths["eval"] == tmp_path / "tables" / "eval.csv" and paths["markdown"] == tmp_path / "summary.md"
    lines = paths["eval"].read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("run,setting,k,eval_set,kind,language,n,accuracy_mean") and len(lines) == 3
    assert lines[1].startswith("a,single,,sst2,in-distribution,all,10,0.8")


def _type_name(tp: Any) -> str:
    """How docs/summary-schema.md writes a field's type."""
    import types
    import typing

    origin = typing.get_origin(tp)
    simple = {type(None): "null", float: "number", int: "integer", str: "string", bool: "bool", Any: "any"}
    if tp in simple:
        return simple[tp]
    if isinstance(tp, type) and hasattr(tp, "__required_keys__"):
        return tp.__name__
    if origin is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if origin is dict:
        return f"{{str: {_type_name(typing.get_args(tp)[1])}}}"
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' for a in typing.get_args(tp))
    assert origin in (typing.Union, types.UnionType), tp
    return " \\| ".join(_type_name(a) for a in typing.get_args(tp))


def test_the_docs_describe_every_field_with_its_type() -> None:
    import re

    from soi.store import summary as schema

    doc = (Path(__file__).resolve().parents[1] / "docs" / "summary-schema.md").read_text(encoding="utf-8")
    sections = {m.group(1): m.group(2) for m in re.finditer(r"^### (\w+)\n(.*?)(?=^##|\Z)", doc, re.M | re.S)}
    classes = {n: c for n, c in vars(schema).items() if isinstance(c, type) and hasattr(c, "__required_keys__")}
    assert set(sections) == set(classes)
    for name, cls in classes.items():
        rows = re.findall(r"^\| `([^`]+)` \| (.+?) \| (.+?) \|$", sections[name], re.M)
        documented = {field: kind for field, kind, _ in rows}
        hints = schema.field_types(cls)
        assert list(documented) == list(hints), name
        for field, tp in hints.items():
            expected = _type_name(tp) + ("" if field in cls.__required_keys__ else " (optional)")
            assert documented[field] == expected, f"{name}.{field}"
