"""Generation metrics: number extraction, ROUGE-L (any script), chrF, language identification."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soi.gen.metrics import (
    chrf,
    chrf_statistics,
    corpus_chrf,
    exact_match,
    extract_number,
    lcs_length,
    normalize_number,
    rouge_l,
    rouge_l_f,
    tokenize,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("Janet sells 9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
    ("#### 1,000", "1000"),
    ("The answer is 1,234.5.", "1234.5"),
    ("so the answer is: 7 apples, not 9", "7"),
    ("La respuesta es 42. Luego 7", "42"),
    ("Réponse : 12,5", "12.5"),
    ("Die Antwort ist 8. Danach 9", "8"),
    ("答案是１８", "18"),
    ("答えは 1,200 円です", "1200"),
    ("৫০ টাকা", "50"),  # Bengali digits
    ("She has 3 cats and 18.00 dollars", "18"),
    ("0.50", "0.5"),
    ("-5 degrees", "-5"),
    ("from 3-2", "2"),
    ("costs $1,234,567.00", "1234567"),
    ("I answer 5 questions. Total 12", "12"),
    ("no digits here", None),
    ("", None),
])
def test_extract_number_table(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("18", "18"), ("18.0", "18"), (18.0, "18"), ("1,234", "1234"), ("+7", "7"), ("-0.0", "0"), (" 007 ", "7"),
    ("3.140", "3.14"), ("abc", None), (None, None), ("inf", None),
])
def test_normalize_number(value: object, expected: str | None) -> None:
    assert normalize_number(value) == expected  # type: ignore[arg-type]


def test_exact_match_vector() -> None:
    preds = ["#### 18", "The answer is 3.0", "I think 5", "", "#### 1,000"]
    gold = ["18", "3", "6", "0", "1000"]
    np.testing.assert_array_equal(exact_match(preds, gold), [True, True, False, False, True])
    with pytest.raises(ValueError, match="2 predictions but 1 answers"):
        exact_match(["a", "b"], ["1"])


def test_tokenize_scripts() -> None:
    assert tokenize("Hello, World_x! It's 2x") == ["hello", "world", "x", "it", "s", "2x"]
    assert tokenize("今日はいい天気") == ["今", "日", "は", "い", "い", "天", "気"]
    # Thai: one token per character, combining vowel/tone marks stay with their base character
    assert tokenize("สวัสดี") == ["ส", "วั", "ส", "ดี"]
    # Devanagari / Bengali: combining marks do not split words
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert tokenize("বাংলা ভাষা") == ["বাংলা", "ভাষা"]
    assert tokenize("سلام دنیا") == ["سلام", "دنیا"]
    assert tokenize("ＡＢＣ Straße") == ["abc", "strasse"]  # NFKC + casefold


def _lcs_dp(a: list[str], b: list[str]) -> int:
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            dp[i + 1][j + 1] = dp[i][j] + 1 if x == y else max(dp[i][j + 1], dp[i + 1][j])
    return dp[-1][-1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcde"), max_size=40), st.lists(st.sampled_from("abcdef"), max_size=40))
def test_lcs_bit_parallel_equals_dp(a: list[str], b: list[str]) -> None:
    assert lcs_length(a, b) == _lcs_dp(a, b)


def test_rouge_l_by_hand() -> None:
    # pred: the cat sat on the mat (6), ref: the cat is on the mat (6); LCS = the cat on the mat = 5
    p, r, f = rouge_l("The cat sat on the mat.", "the cat is on the mat")
    assert (p, r) == pytest.approx((5 / 6, 5 / 6))
    assert f == pytest.approx(5 / 6)
    # pred 3 tokens, ref 5 tokens, LCS 2 -> P = 2/3, R = 2/5, F = 2PR/(P+R) = 0.5
    p, r, f = rouge_l("a b x", "a y b z w")
    assert (p, r, f) == pytest.approx((2 / 3, 2 / 5, 0.5))
    assert rouge_l("", "a b") == (0.0, 0.0, 0.0)
    assert rouge_l("x y", "a b") == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(("pred", "ref", "f"), [
    ("今天天气很好", "今天天气不好", 5 / 6),        # Chinese, no spaces: 6 chars each, LCS 5
    ("今日はいい天気です", "明日はいい天気です", 8 / 9),  # Japanese: 9 chars each, LCS 8
    ("วันนี้อากาศดี", "วันนี้อากาศไม่ดี", None),   # Thai
    ("امروز هوا خوب است", "امروز هوا بد است", 3 / 4),  # Persian: 4 words each, LCS 3
])
def test_rouge_l_non_latin_not_zero(pred: str, ref: str, f: float | None) -> None:
    score = rouge_l(pred, ref)[2]
    assert score > 0.5
    if f is not None:
        assert score == pytest.approx(f)


_WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "quickly", "home", "42", "Blue", "fish"]
_sentences = st.lists(st.sampled_from(_WORDS), min_size=0, max_size=25).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(_sentences, _sentences, st.sampled_from(["", ".", ",", "!"]))
def test_rouge_l_parity_with_rouge_score(pred: str, ref: str, punct: str) -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pred = pred.replace(" ", punct + " ")
    expected = scorer.score(ref, pred)["rougeL"]
    p, r, f = rouge_l(pred, ref)
    assert (p, r, f) == pytest.approx((expected.precision, expected.recall, expected.fmeasure), abs=1e-12)


def test_rouge_l_f_vector() -> None:
    np.testing.assert_allclose(rouge_l_f(["a b", "今天"], ["a b", "明天"]), [1.0, 0.5])


def test_chrf_by_hand() -> None:
    # hyp "ab", ref "ac": 1-grams P = R = 1/2; 2-grams P = R = 0; orders 3..6 not effective.
    # mean P = mean R = 1/4 -> F2 = 5 * P * R / (4P + R) = 1/4
    assert chrf(["ab"], ["ac"])[0] == pytest.approx(0.25)
    assert chrf(["a b c"], ["abc"])[0] == pytest.approx(1.0)  # whitespace removed
    assert chrf([""], ["abc"])[0] == 0.0
    np.testing.assert_array_equal(chrf_statistics("ab", "ac", 3), [[2, 2, 1], [1, 1, 0], [0, 0, 0]])


_texts = st.text(alphabet=st.sampled_from(list("abcde fgé今天好สวัส  .,")), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_texts, _texts), min_size=1, max_size=4))
def test_chrf_parity_with_sacrebleu(pairs: list[tuple[str, str]]) -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    got = chrf(hyps, refs)
    for (h, r), g in zip(pairs, got, strict=True):
        assert g == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score / 100, abs=1e-9)
    assert corpus_chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score / 100, abs=1e-9)


def test_language_identification_offline() -> None:
    pytest.importorskip("py3langid")
    from soi.gen.langid import identify, known_languages, language_fidelity

    texts = ["Bonjour, comment allez-vous aujourd'hui ?", "Guten Tag, wie geht es Ihnen heute?",
             "今日はいい天気ですね", "The weather is nice today, isn't it?", "1234 + 5", ""]
    assert identify(texts) == ["fr", "de", "ja", "en", "und", "und"]
    assert "sw" in known_languages()
    np.testing.assert_array_equal(language_fidelity(texts[:4], ["fr", "fr", "ja", "en"]), [True, False, True, True])
    # restricting the candidates: a Spanish sentence among {en, es, fr}
    assert identify(["¿Dónde está la biblioteca de la ciudad?"], candidates=["en", "es", "fr"]) == ["es"]
