"""Romanised Persian (fa-Latn): the transliteration by hand, the derived massive_fa_latn dataset against massive_fa,
the unseen fa-Latn language in a mixture and in a study config, and language identification of subtagged codes."""

from __future__ import annotations

import copy
import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soi.data.translit import CONSONANTS, MARKS, OTHER, VOWEL_LETTERS, ZWNJ, romanize_persian
from soi.errors import SoiError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOI_DATA_DIR") or REPO.parent / "shared" / "data")
needs_massive = pytest.mark.skipif(not (SHARED / "massive_fa" / "info.json").is_file(),
                                   reason=f"shared data not found at {SHARED} (set SOI_DATA_DIR)")
PERSIAN = "".join([*CONSONANTS, *VOWEL_LETTERS, "و", "ی", "ي", "ه", *MARKS, ZWNJ])


@pytest.mark.parametrize(("fa", "latn"), [
    ("خانه", "khane"),            # final he after a consonant: e
    ("راه", "rah"),               # final he after a vowel letter: h
    ("هفته", "hfte"),             # initial he: h; short vowels are not written
    ("این", "in"),                # initial alef + ye: i
    ("او", "u"),                  # initial alef + vav: u
    ("اسم", "asm"),               # initial alef otherwise: a
    ("و", "va"),                  # the conjunction
    ("روز", "ruz"),               # vav between consonants: u
    ("تو", "to"),                 # final vav after a consonant: o
    ("آواز", "avaz"),             # vav after a vowel letter: v; madda alef: a
    ("وقت", "vght"),              # initial vav: v; qaf: gh
    ("بیدارم", "bidarm"),         # ye after a consonant: i
    ("یک", "yk"),                 # initial ye: y
    ("های", "hay"),               # ye after a vowel letter: y
    ("يك", "yk"),                 # Arabic yeh and kaf are the Persian letters
    ("خانه\u200cها", "khaneha"),  # ZWNJ joins, and ends a part for the he rule
    ("لطفاً", "ltfan"),           # tanvin: n
    ("ساعت ۷", "sa't 7"),         # ain: '; Persian digits: ASCII
    ("چطوری؟", "chturi?"),        # Persian question mark
    ("ژاله، شب", "zhale, shb"),   # Persian comma
    ("play music", "play music"),  # Latin passes through
])
def test_romanize_by_hand(fa: str, latn: str) -> None:
    assert romanize_persian(fa) == latn


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=PERSIAN + " 0123456789", max_size=40))
def test_romanize_leaves_no_persian_script(text: str) -> None:
    out = romanize_persian(text)
    assert all(ord(ch) < 128 for ch in out), out  # every letter and mark of the table maps to ASCII
    assert out.count(" ") == text.count(" ")      # words are kept one for one
    assert romanize_persian(text) == out          # deterministic


def test_romanize_tables_are_ascii_and_disjoint() -> None:
    for table in (CONSONANTS, VOWEL_LETTERS, MARKS, OTHER):
        assert all(v.isascii() for v in table.values())
    assert not set(CONSONANTS) & set(VOWEL_LETTERS) and not set(CONSONANTS) & set(MARKS)
    assert all(unicodedata.category(m) in ("Mn", "Lm") for m in MARKS)


@needs_massive
def test_massive_fa_latn_is_massive_fa_romanised() -> None:
    from soi.data import load_split

    fa = load_split("massive_fa", "test", data_dir=SHARED)
    latn = load_split("massive_fa_latn", "test", data_dir=SHARED, languages=["fa-Latn"])
    assert latn.name == "massive_fa_latn" and latn.languages == ("fa-Latn",) and len(latn) == len(fa) == 2974
    assert latn.labels == fa.labels and latn.gold.tolist() == fa.gold.tolist()
    assert latn.parallel_ids == fa.parallel_ids
    assert latn.ids[:2] == ["massive_fa_latn-test-0", "massive_fa_latn-test-1"]
    a, b = fa.table.column("text").to_pylist(), latn.table.column("text").to_pylist()
    assert b == [romanize_persian(x) for x in a]
    assert b[0] == "in hfte sa't pnj sbh bidarm kn"  # "wake me up at five am this week"
    assert all(x.isascii() for x in b)  # every character of MASSIVE fa is in the table
    assert set(latn.table.column("language").to_pylist()) == {"fa-Latn"}
    assert set(latn.table.column("source").to_pylist()) == {"massive_fa_latn"}
    with pytest.raises(SoiError, match=r"massive_fa_latn has no language\(s\) \['fa'\]"):
        load_split("massive_fa_latn", "test", data_dir=SHARED, languages=["fa"])


@needs_massive
def test_unseen_fa_latn_evaluates_the_same_items(monkeypatch: pytest.MonkeyPatch) -> None:
    from soi.gen.mixture import MixtureSpec, PoolSource, build_mixture

    monkeypatch.setenv("SOI_DATA_DIR", str(SHARED))
    spec = MixtureSpec(
        seen=("fa",), unseen=("fa-Latn",), ks=(0, 8), english_n=8, n_eval=10, n_validation=2, seed=0,
        train=(PoolSource("massive_en", "train"), PoolSource("massive_fa", "train")),
        validation=(PoolSource("massive_en", "validation"), PoolSource("massive_fa", "validation")),
        eval=(PoolSource("massive_en", "test"), PoolSource("massive_fa", "test"),
              PoolSource("massive_fa_latn", "test")))
    mix = build_mixture(spec, task="intent")
    en, fa, latn = (mix.eval_rows(x) for x in ("en", "fa", "fa-Latn"))
    assert len(latn) == 10
    assert [r["parallel_id"] for r in latn] == [r["parallel_id"] for r in fa] == [r["parallel_id"] for r in en]
    assert [r["answer"] for r in latn] == [r["answer"] for r in fa]
    assert [r["prompt"] for r in latn] == [romanize_persian(r["prompt"]) for r in fa]
    assert not {r["language"] for r in mix.train_rows(8)} & {"fa-Latn"}  # eval only


def test_langid_identifies_subtagged_codes_by_their_language() -> None:
    pytest.importorskip("py3langid")
    from soi.gen.langid import base_language, identify, language_fidelity, language_match, unknown_languages

    assert base_language("fa-Latn") == "fa" and base_language("zh-TW") == "zh" and base_language("en") == "en"
    assert unknown_languages(["fa-Latn", "zh-TW", "en", "ti", "ti-Latn"]) == ["ti", "ti-Latn"]
    texts = ["این هفته ساعت پنج صبح بیدارم کن", "wake me up at five am this week", "123"]
    assert identify(texts, ["en", "fa", "fa-Latn"]) == ["fa", "en", "und"]
    assert language_fidelity(texts, "fa-Latn", ["en", "fa-Latn"]).tolist() == [True, False, False]
    faithful, keep = language_match(texts, ["fa-Latn", "en", "fa-Latn"], ["en", "fa"])
    assert faithful.tolist() == [True, True, False] and keep.tolist() == [True, True, True]


BASE = {"type": "generative", "name": "s", "model": "gemma3-270m", "tasks": {"intent": {
    "kind": "instruction", "metric": ["rouge_l", "label_match"],
    "train": [{"dataset": "massive_en", "split": "train"}, {"dataset": "massive_fa", "split": "train"}],
    "eval": [{"dataset": "massive_fa_latn", "split": "test"}]}},
    "mixture": {"english_n": 8, "seen": ["fa"], "unseen": ["fa-Latn"], "k": [0, 4]},
    "scoring": {"scorers": ["label_match"]}}


def test_study_config_accepts_fa_latn_and_metric_lists() -> None:
    pytest.importorskip("py3langid")
    from soi.config.generative import GenerativeStudyConfig

    cfg = GenerativeStudyConfig.from_dict(copy.deepcopy(BASE), source="s.yaml")
    assert cfg.metric("intent") == "rouge_l" and cfg.transfer_metrics("intent") == ["rouge_l", "label_match"]
    assert cfg.metrics("intent") == ["rouge_l", "chrf", "language_fidelity", "label_match"]
    one = copy.deepcopy(BASE)
    one["tasks"]["intent"]["metric"] = "label_match"
    assert GenerativeStudyConfig.from_dict(one).transfer_metrics("intent") == ["label_match"]
    del one["tasks"]["intent"]["metric"]
    assert GenerativeStudyConfig.from_dict(one).transfer_metrics("intent") == ["rouge_l"]


@pytest.mark.parametrize(("change", "message"), [
    ({"metric": ["rouge_l", "exact_match"]},
     "s.yaml: tasks.intent.metric[1]: instruction tasks report rouge_l, chrf, language_fidelity, label_match; "
     "got 'exact_match'"),
    ({"metric": ["rouge_l", "rouge_l"]}, "s.yaml: tasks.intent.metric: a list of distinct metrics"),
    ({"metric": []}, "s.yaml: tasks.intent.metric: a list of distinct metrics"),
    ({"mixture": {"unseen": ["ti-Latn"]}}, "s.yaml: tasks.intent.mixture.unseen[0]: language 'ti-Latn' is unknown "
     "to the offline language identifier"),
])
def test_study_config_errors(change: dict[str, object], message: str) -> None:
    pytest.importorskip("py3langid")
    from soi.config.generative import GenerativeStudyConfig

    data = copy.deepcopy(BASE)
    data["tasks"]["intent"] |= change
    with pytest.raises(SoiError) as exc:
        GenerativeStudyConfig.from_dict(data, source="s.yaml")
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)
