"""Generation metrics: math exact match, ROUGE-L for any script, chrF.

All scores are in ``[0, 1]`` (sacrebleu reports chrF x 100). Pure functions: strings in, NumPy arrays out.

* **Exact match** of the final number (GSM8K, Cobbe et al. 2021; MGSM, Shi et al. 2023): the number after the last
  ``####``, else after the last "the answer is" (a few languages), else the last number in the text; Unicode digits
  mapped to ASCII (NFKC + ``unicodedata.decimal``), thousands commas and trailing zeros removed.
* **ROUGE-L** (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"): F-measure of the longest common
  subsequence of tokens, ``P = LCS/|pred|``, ``R = LCS/|ref|``, ``F = (1+β²)PR/(R+β²P)`` with β = 1 as in Google's
  ``rouge-score``. Tokens are case-folded Unicode words (letters, digits and their combining marks), and scripts
  written without spaces (Han, Hiragana/Katakana, Thai, Lao, Khmer, Myanmar) are split into characters, so Chinese,
  Japanese or Thai never score 0 for want of spaces. On ASCII English the tokens equal ``rouge-score``'s (no
  stemming). The LCS uses the bit-parallel algorithm of Allison & Dix (1986) / Hyyrö (2004).
* **chrF** (Popović 2015, "chrF: character n-gram F-score for automatic MT evaluation"): character n-grams n = 1..6
  with whitespace removed, β = 2, word n-grams 0, per-order F averaged the way ``sacrebleu`` 2.x does by default
  (average precision and recall over the orders that both sides have, then F_β).
* **Switch-aware scores** (:func:`switch_aware`): a response in another language than the prompt's scores 0
  (``multiply``) or at most ``cap`` (``cap``), so a model that answers a Spanish prompt in English is not credited
  for it; Shimabucoro et al. (2025, "A Post-trainer's Guide to Multilingual Training Data") penalise such language
  switches. The language match comes from :mod:`soi.gen.langid`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

import numpy as np

# --------------------------------------------------------------------------------------------------- numbers
_NUMBER = r"(?<![0-9A-Za-z_.])-?\d+(?:,\d{3}(?!\d))*(?:[.,]\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_MARKER_RE = re.compile(r"####\s*[$€£¥]?\s*(" + _NUMBER + ")")
_ANSWER_RE = re.compile(
    r"(?:(?:answer|respuesta|réponse|antwort|ответ)(?:\s+(?:is|es|est|ist)\s*[:：]?|\s*[:：])|答案是|答案[:：]|答えは)"
    r"\s*[$€£¥]?\s*(" + _NUMBER + ")", re.IGNORECASE)
_THOUSANDS = re.compile(r",(?=\d{3}(?!\d))")
_MINUS = str.maketrans({"−": "-", "–": "-", "﹣": "-", "－": "-"})


@functools.cache
def _digit_table() -> dict[int, str]:
    """Every non-ASCII Unicode decimal digit (Bengali, Thai, full-width, ...) -> its ASCII digit."""
    table: dict[int, str] = {}
    for cp in range(0x80, 0x20000):
        ch = chr(cp)
        d = unicodedata.decimal(ch, None)
        if d is not None:
            table[cp] = str(d)
    return table


def _ascii_digits(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_digit_table()).translate(_MINUS)


def normalize_number(value: str | float | int | None) -> str | None:
    """Canonical text of a number: ``"1,234.50"`` -> ``"1234.5"``, ``"18.0"`` -> ``"18"``; ``None`` if not one.

    A comma before exactly three digits is a thousands separator; any other comma is a decimal comma
    (``"12,5"`` -> ``"12.5"``), so a French ``"1,234"`` reads as 1234.
    """
    if value is None:
        return None
    s = _THOUSANDS.sub("", _ascii_digits(str(value)).strip()).replace(",", ".").lstrip("+")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def extract_number(text: str | None) -> str | None:
    """The final answer number in a model output (canonical, see :func:`normalize_number`), or ``None``.

    Order: the number after the last ``####``; else after the last "the answer is" / "answer:" (also es, fr, de,
    ru, zh, ja phrasings); else the last number anywhere. ``"The answer is 1,234.5."`` -> ``"1234.5"``.
    """
    if not text:
        return None
    t = _ascii_digits(text)
    for pattern in (_MARKER_RE, _ANSWER_RE):
        hits = pattern.findall(t)
        if hits:
            return normalize_number(hits[-1])
    hits = _NUMBER_RE.findall(t)
    return normalize_number(hits[-1]) if hits else None


def exact_match(predictions: Sequence[str], answers: Sequence[str | float | int | None]) -> np.ndarray:
    """Per-example exact match (bool array) of the extracted final number with the gold answer."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
    pred = np.array([extract_number(p) for p in predictions], dtype=object)
    gold = np.array([normalize_number(a) for a in answers], dtype=object)
    return np.array([g is not None and p == g for p, g in zip(pred, gold, strict=True)], dtype=bool)


def answer_unparsed(predictions: Sequence[str]) -> np.ndarray:
    """Per-example bool: no final number can be read from the output (:func:`extract_number` is ``None``); its mean
    is the unparsed-answer rate of a math task."""
    return np.array([extract_number(p) is None for p in predictions], dtype=bool)


# ----------------------------------------------------------------------------------------------- switching
SWITCH_MODES = ("off", "multiply", "cap")


def switch_aware(scores: np.ndarray | Sequence[float], match: np.ndarray | Sequence[bool], mode: str = "multiply",
                 cap: float = 0.5) -> np.ndarray:
    """Switch-aware scores (any shape; ``match`` broadcasts): where the response's language is not the prompt's
    (``match`` false), ``multiply`` sets the score to 0 (``score x 1[match]``) and ``cap`` to ``min(score, cap)``;
    ``off`` returns the scores unchanged (float64 copy)."""
    if mode not in SWITCH_MODES:
        raise ValueError(f"switch mode must be one of {', '.join(SWITCH_MODES)}, got {mode!r}")
    if not 0.0 <= cap <= 1.0:
        raise ValueError(f"cap must be in [0, 1], got {cap}")
    s = np.array(scores, dtype=np.float64)
    m = np.asarray(match, dtype=bool)
    if mode == "off":
        return s
    if mode == "multiply":
        return s * m
    return np.where(m, s, np.minimum(s, cap))


# -------------------------------------------------------------------------------------------------- tokens
# Scripts written without spaces between words: one token per character (plus its combining marks).
_CHAR_SCRIPTS = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3005-\u3007"  # 々 〆 〇
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003ffff"  # CJK extensions B-H
)


def _ranges(codepoints: list[int]) -> str:
    out, start, prev = [], None, None
    for cp in codepoints:
        if start is None:
            start = prev = cp
        elif cp == prev + 1:
            prev = cp
        else:
            out.append((start, prev))
            start = prev = cp
    if start is not None:
        out.append((start, prev))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in out)


@functools.cache
def _token_re() -> re.Pattern[str]:
    marks = _ranges([cp for cp in range(0x30000) if unicodedata.category(chr(cp)).startswith("M")])
    return re.compile(
        f"[{_CHAR_SCRIPTS}][{marks}]*"  # one character of a space-less script (+ its marks)
        f"|(?:(?![{_CHAR_SCRIPTS}])[^\\W_]|[{marks}])+"  # a run of letters/digits/marks of other scripts
    )


def tokenize(text: str) -> list[str]:
    """ROUGE tokens: case-folded NFKC Unicode words; Han/Kana/Thai/Lao/Khmer/Myanmar split into characters."""
    return _token_re().findall(unicodedata.normalize("NFKC", text).casefold())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences.

    Bit-parallel (Allison & Dix 1986; Hyyrö 2004): ``V`` holds one bit per token of ``a``; per token of ``b``,
    ``U = V & match(b_j)``, ``V = (V + U) | (V - U)``; the LCS is the number of cleared bits. O(|a||b|/w).
    """
    if not a or not b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l(prediction: str, reference: str) -> tuple[float, float, float]:
    """ROUGE-L ``(precision, recall, F1)`` of one prediction against one reference (Lin 2004)."""
    pred, ref = tokenize(prediction), tokenize(reference)
    if not pred or not ref:
        return 0.0, 0.0, 0.0
    lcs = lcs_length(pred, ref)
    p, r = lcs / len(pred), lcs / len(ref)
    return p, r, (2 * p * r / (p + r)) if lcs else 0.0


def rouge_l_f(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-example ROUGE-L F1 (float64 array)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    return np.array([rouge_l(p, r)[2] for p, r in zip(predictions, references, strict=True)], dtype=np.float64)


# --------------------------------------------------------------------------------------------------- chrF
def chrf_statistics(hypothesis: str, reference: str, char_order: int = 6) -> np.ndarray:
    """``(char_order, 3)`` int array of ``[hyp n-grams, ref n-grams, matches]`` per order n = 1..char_order.

    Whitespace is removed first; as in sacrebleu, hypothesis n-grams count 0 for an order the reference lacks.
    """
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    out = np.zeros((char_order, 3), dtype=np.int64)
    for n in range(1, char_order + 1):
        h = Counter(hyp[i:i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i:i + n] for i in range(len(ref) - n + 1))
        n_ref = sum(r.values())
        out[n - 1] = (sum(h.values()) if n_ref else 0, n_ref, sum((h & r).values()))
    return out


def chrf_from_statistics(stats: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """chrF from statistics of shape ``(..., orders, 3)`` (sacrebleu's default, effective-order averaging).

    Per order ``P_n = match/hyp``, ``R_n = match/ref`` over orders where both counts are > 0; ``P``, ``R`` their
    means; ``chrF_β = (1+β²)PR/(β²P + R)`` (0 where no order is effective or P + R = 0).
    """
    s = np.asarray(stats, dtype=np.float64)
    hyp, ref, match = s[..., 0], s[..., 1], s[..., 2]
    eff = (hyp > 0) & (ref > 0)
    n_eff = eff.sum(axis=-1)
    prec = np.where(eff, match / np.where(hyp > 0, hyp, 1.0), 0.0).sum(axis=-1)
    rec = np.where(eff, match / np.where(ref > 0, ref, 1.0), 0.0).sum(axis=-1)
    safe = np.maximum(n_eff, 1)
    prec, rec = prec / safe, rec / safe
    f2 = beta * beta
    denom = f2 * prec + rec
    return np.where((n_eff > 0) & (prec + rec > 0), (1 + f2) * prec * rec / np.where(denom > 0, denom, 1.0), 0.0)


def chrf(predictions: Sequence[str], references: Sequence[str], *, char_order: int = 6,
         beta: float = 2.0) -> np.ndarray:
    """Per-example (sentence-level) chrF in [0, 1] (Popović 2015); equals ``sacrebleu``'s ``sentence_chrf / 100``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return np.zeros(0, dtype=np.float64)
    stats = np.stack([chrf_statistics(p, r, char_order) for p, r in zip(predictions, references, strict=True)])
    return chrf_from_statistics(stats, beta)


def corpus_chrf(predictions: Sequence[str], references: Sequence[str], *, char_order: int = 6,
                beta: float = 2.0) -> float:
    """Corpus chrF in [0, 1]: statistics summed over segments first (``sacrebleu.corpus_chrf / 100``)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return 0.0
    stats = sum(chrf_statistics(p, r, char_order) for p, r in zip(predictions, references, strict=True))
    return float(chrf_from_statistics(np.asarray(stats), beta))
