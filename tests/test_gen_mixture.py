"""Mixture builder: the parallel leak rule, nested k, exact counts, seeded reproducibility, real pools."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from shared_data import SHARED, needs_dataset
from soi.errors import SoiError
from soi.gen.mixture import (
    MixtureSpec,
    PoolSource,
    build_mixture,
    classification_as_generation,
    group_key,
    plan_mixture,
)

needs_shared = needs_dataset("mgsm")
LANGS = ["en", "es", "fr", "de", "ja"]
_DUMMY = (PoolSource("x", "train"),)


def _table(rows: list[tuple[str, str, str | None]]) -> pa.Table:
    ids, langs, pids = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table({"id": pa.array(ids, pa.string()), "language": pa.array(langs, pa.string()),
                     "parallel_id": pa.array(pids, pa.string())})


@st.composite
def pools(draw: st.DrawFn) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Three overlapping pools of parallel items (some missing in some languages) and unaligned rows."""
    n_items = draw(st.integers(5, 40))
    present = draw(st.lists(st.lists(st.booleans(), min_size=len(LANGS), max_size=len(LANGS)),
                            min_size=n_items, max_size=n_items))
    rows = [(f"{lang}-p{i}", lang, f"item-{i}") for i in range(n_items) for j, lang in enumerate(LANGS)
            if present[i][j]]
    n_solo = draw(st.integers(0, 30))
    rows += [(f"solo-{i}", draw(st.sampled_from(LANGS)), None) for i in range(n_solo)]
    # each role sees a random subset of the rows; the same id may be in several roles (one shared pool)
    masks = [draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows))) for _ in range(3)]
    return tuple(_table([r for r, m in zip(rows, mask, strict=True) if m or role == 2])  # eval sees everything
                 for role, mask in enumerate(masks))  # type: ignore[return-value]


@settings(max_examples=300, deadline=None)
@given(pools(), st.integers(0, 4), st.integers(0, 3), st.integers(0, 5),
       st.lists(st.integers(0, 8), min_size=1, max_size=4, unique=True), st.integers(0, 3), st.booleans())
def test_plan_never_leaks_and_counts_exact(tables: tuple[pa.Table, pa.Table, pa.Table], n_eval: int, n_val: int,
                                           english_n: int, ks: list[int], seed: int, parallel_train: bool) -> None:
    train, val, ev = tables
    spec = MixtureSpec(seen=("es", "fr"), unseen=("de", "ja"), ks=tuple(ks), train=_DUMMY, eval=_DUMMY,
                       validation=_DUMMY, english_n=english_n, n_eval=n_eval, n_validation=n_val, seed=seed,
                       parallel_train=parallel_train)
    try:
        plan = plan_mixture(train, val, ev, spec)
    except SoiError as exc:
        assert str(exc).startswith(("mixture.n_eval", "mixture.n_validation", "mixture.english_n", "mixture.k:"))
        event("too few rows")
        return
    event("planned")
    group = {}
    lang_of = {}
    for t in tables:
        for rid, lang, pid in zip(*(t.column(c).to_pylist() for c in ("id", "language", "parallel_id")), strict=True):
            group[rid], lang_of[rid] = group_key(rid, pid), lang
    held_out = {group[r] for ids in [*plan.eval_ids.values(), *plan.validation_ids.values()] for r in ids}
    eval_groups = {group[r] for ids in plan.eval_ids.values() for r in ids}
    kmax = max(ks)
    train_max = plan.train_ids(kmax)
    train_groups = {group[r] for ids in train_max.values() for r in ids}
    # the leak rule, across all languages: no group both trained on and held out
    assert not train_groups & held_out
    assert not eval_groups & {group[r] for ids in plan.validation_ids.values() for r in ids}
    # exact counts, right languages, no duplicates
    has_en = "en" in ev.column("language").to_pylist()
    eval_langs = [x for x in LANGS if x != "en" or english_n or has_en]
    assert {lang: len(ids) for lang, ids in plan.eval_ids.items()} == dict.fromkeys(eval_langs, n_eval)
    trained = (["en"] if english_n else []) + (["es", "fr"] if kmax else [])
    assert {lang: len(ids) for lang, ids in plan.validation_ids.items()} == \
        (dict.fromkeys(trained, n_val) if n_val and trained else {})
    for k in ks:
        ids = plan.train_ids(k)
        expected = ({"en": english_n} if english_n else {}) | ({"es": k, "fr": k} if kmax else {})
        assert {lang: len(v) for lang, v in ids.items()} == expected
        # nested: every k's set is a prefix (so a subset) of the largest one
        for lang, v in ids.items():
            assert v == train_max[lang][:len(v)]
    for role in (plan.eval_ids, plan.validation_ids, train_max):
        for lang, ids in role.items():
            assert all(lang_of[r] == lang for r in ids) and len(set(ids)) == len(ids)
    # seeded: the same inputs give the same plan
    assert plan_mixture(train, val, ev, spec) == plan


def test_plan_parallel_items_share_eval_and_parallel_train() -> None:
    rows = [(f"{lang}-{i}", lang, f"item-{i}") for i in range(30) for lang in LANGS]
    t = _table(rows)
    spec = MixtureSpec(seen=("es", "fr"), unseen=("de", "ja"), ks=(0, 4, 8), train=_DUMMY, eval=_DUMMY,
                       validation=_DUMMY, english_n=5, n_eval=6, n_validation=2, seed=1)
    plan = plan_mixture(t, t, t, spec)
    items = {lang: {r.split("-")[1] for r in ids} for lang, ids in plan.eval_ids.items()}
    assert all(v == items["en"] for v in items.values())  # eval on the same items in every language
    assert plan.reserved_groups == {f"p:item-{i}" for i in items["en"]} | \
        {f"p:item-{r.split('-')[1]}" for ids in plan.validation_ids.values() for r in ids}
    par = plan_mixture(t, t, t, MixtureSpec(**{**spec.__dict__, "parallel_train": True}))
    assert [r.split("-")[1] for r in par.train_order["es"]] == [r.split("-")[1] for r in par.train_order["fr"]]
    other = plan_mixture(t, t, t, MixtureSpec(**{**spec.__dict__, "seed": 2}))
    assert other.eval_ids != plan.eval_ids  # the seed changes the draw


def test_plan_errors_name_the_field() -> None:
    t = _table([(f"{lang}-{i}", lang, f"item-{i}") for i in range(10) for lang in LANGS])
    base = {"seen": ("es",), "unseen": ("de",), "train": _DUMMY, "eval": _DUMMY, "validation": _DUMMY}
    with pytest.raises(SoiError, match=r"mixture.k: seen language 'es' has 4 training rows available .* is 5"):
        plan_mixture(t, t, t, MixtureSpec(ks=(0, 5), n_eval=6, **base))
    with pytest.raises(SoiError, match=r"mixture.n_eval: language 'en' has 10 eval rows available, 11 needed"):
        plan_mixture(t, t, t, MixtureSpec(ks=(0,), n_eval=11, **base))
    with pytest.raises(SoiError, match="overlap"):
        MixtureSpec(ks=(0,), seen=("es",), unseen=("es",), train=_DUMMY, eval=_DUMMY)
    with pytest.raises(SoiError, match=r"mixture\.k must be distinct non-negative"):
        MixtureSpec(ks=(0, -1), **base)


@needs_shared
def test_build_math_mixture_from_shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOI_DATA_DIR", str(SHARED))
    spec = MixtureSpec(
        seen=("es", "fr"), unseen=("de", "ja"), ks=(0, 16, 64), english_n=32, n_eval=20, n_validation=4, seed=0,
        train=(PoolSource("gsm8k", "train"), PoolSource("mgsm", "test", ("es", "fr"))),
        validation=(PoolSource("gsm8k", "validation"), PoolSource("mgsm", "test", ("es", "fr"))),
        eval=(PoolSource("mgsm", "test"),))
    mix = build_mixture(spec, task="math")
    rows16 = mix.train_rows(16)
    assert [r["language"] for r in rows16].count("es") == 16 and len(rows16) == 32 + 2 * 16
    en = [r for r in rows16 if r["language"] == "en"]
    assert all(r["source"] == "gsm8k" and "####" in r["response"] for r in en)
    es = [r for r in rows16 if r["language"] == "es"]
    assert all(r["response"] == f"#### {r['answer']}" and r["response_filled"] for r in es)
    ev = mix.eval_rows()
    assert len(ev) == 5 * 20 and all(r["response"] == "" for r in ev)  # MGSM eval: the answer is the reference
    eval_pids = {r["parallel_id"] for r in ev}
    assert len(eval_pids) == 20  # the same 20 MGSM items in every language
    train_pids = {r["parallel_id"] for r in mix.train_rows(64)} - {None}
    assert not train_pids & eval_pids
    assert not train_pids & {r["parallel_id"] for r in mix.validation_rows()}
    path = mix.save_manifest(tmp_path / "mixture.json", 16)
    man = json.loads(path.read_text(encoding="utf-8"))
    assert man["counts"] == {"train": {"en": 32, "es": 16, "fr": 16}, "validation": {"en": 4, "es": 4, "fr": 4},
                             "eval": dict.fromkeys(LANGS, 20)}
    assert man["responses_from_template"] == {"es": 16, "fr": 16}
    assert man["sources"]["train"][1] == {"dataset": "mgsm", "split": "test", "languages": ["es", "fr"],
                                          "origin": "local"}
    assert man["ids"]["train"]["es"] == [r["id"] for r in es] and man["seed"] == 0 and man["k"] == 16
    with pytest.raises(SoiError, match="k=8 is not in the mixture's grid"):
        mix.train_rows(8)


@needs_shared
def test_build_instruction_mixture_and_bad_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOI_DATA_DIR", str(SHARED))
    spec = MixtureSpec(seen=("fr",), unseen=(), ks=(0, 8), english_n=0, n_eval=10, n_validation=0,
                       train=(PoolSource("oasst_fr", "train"),), eval=(PoolSource("oasst_fr", "validation"),))
    mix = build_mixture(spec, task="instruction")
    assert len(mix.train_rows(0)) == 0 and len(mix.train_rows(8)) == 8
    assert all(r["response"] for r in mix.eval_rows("fr"))
    bad = MixtureSpec(seen=("fr",), unseen=(), ks=(0,), train=(PoolSource("no_such_dataset", "train"),),
                      eval=(PoolSource("oasst_fr", "validation"),))
    with pytest.raises(SoiError, match=r"^mixture.train\[0\]: .*no_such_dataset"):
        build_mixture(bad)


def test_classification_as_generation_by_hand() -> None:
    table = pa.table({"id": ["a", "b"], "text": ["the premise", "just text"], "text_pair": ["a hypothesis", None],
                      "label": ["entailment", "neutral"], "language": ["en", "fr"], "source": ["s", "s"],
                      "parallel_id": [None, "p1"]})
    out = classification_as_generation(table).to_pylist()
    assert out == [{"id": "a", "prompt": "the premise\na hypothesis", "response": "entailment",
                    "answer": "entailment", "language": "en", "source": "s", "parallel_id": None},
                   {"id": "b", "prompt": "just text", "response": "neutral", "answer": "neutral", "language": "fr",
                    "source": "s", "parallel_id": "p1"}]
    no_pair = classification_as_generation(table.drop_columns(["text_pair", "parallel_id", "source"])).to_pylist()
    assert [r["prompt"] for r in no_pair] == ["the premise", "just text"]
    assert [(r["parallel_id"], r["source"]) for r in no_pair] == [(None, None), (None, None)]


@needs_shared
def test_build_intent_mixture_from_massive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOI_DATA_DIR", str(SHARED))
    spec = MixtureSpec(
        seen=("fa",), unseen=(), ks=(0, 8, 24), english_n=16, n_eval=12, n_validation=3, seed=1,
        train=(PoolSource("massive_en", "train"), PoolSource("massive_fa", "train")),
        validation=(PoolSource("massive_en", "validation"), PoolSource("massive_fa", "validation")),
        eval=(PoolSource("massive_en", "test"), PoolSource("massive_fa", "test")))
    mix = build_mixture(spec, task="intent")
    rows = mix.train_rows(24)
    assert [r["language"] for r in rows].count("en") == 16 and [r["language"] for r in rows].count("fa") == 24
    labels = json.loads((SHARED / "massive_en" / "info.json").read_text(encoding="utf-8"))["labels"]
    assert all(r["response"] == r["answer"] and r["response"] in labels for r in rows)
    assert not any(r.get("response_filled") for r in rows)  # label names are real responses, not templates
    assert {r["id"] for r in mix.train_rows(8)} < {r["id"] for r in rows}  # nested k
    en, fa = mix.eval_rows("en"), mix.eval_rows("fa")
    # MASSIVE en/fa are line-aligned translations: the same eval items, with the same gold intent, in both
    assert [r["parallel_id"] for r in en] == [r["parallel_id"] for r in fa]
    assert [r["answer"] for r in en] == [r["answer"] for r in fa]
    held = {r["parallel_id"] for r in en} | {r["parallel_id"] for r in mix.validation_rows()}
    assert not held & {r["parallel_id"] for r in rows}
