"""Deterministic Persian-script -> Latin transliteration ("Finglish") and the derived ``massive_fa_latn`` dataset.

Persian is often written in Latin letters online ("Finglish", "Pinglish"; ISO 15924 script ``Latn``, so the BCP 47
code ``fa-Latn``). No romanised Persian corpus is offline, so :func:`romanize_persian` derives one, letter by letter,
from the Persian script: a fixed table (consonants as in common Finglish, e.g. ``خ`` kh, ``ش`` sh, ``ق``/``غ`` gh)
and five context rules for the letters that stand for vowels or consonants:

* ``ا`` (alef) at the start of a word before ``و`` / ``ی`` carries a vowel: ``او`` -> ``u``, ``ای`` -> ``i``
  (``این`` -> ``in``); otherwise ``a``.
* ``و`` (vav): ``v`` at the start of a word or after a vowel letter; alone (the conjunction "and") ``va``; at the
  end of a word after a consonant ``o`` (``تو`` -> ``to``); otherwise ``u`` (``روز`` -> ``ruz``).
* ``ی`` (ye): ``y`` at the start of a word or after a vowel letter; otherwise ``i`` (``بیدار`` -> ``bidar``).
* ``ه`` (he): ``e`` at the end of a word after a consonant letter (``خانه`` -> ``khane``); otherwise ``h``.
* the zero-width non-joiner (U+200C) joins the parts of a word (``می‌خوام`` -> ``mikhvam``) and ends a part for
  the rules above (``خانه‌ها`` -> ``khaneha``).

Short vowels are not written in the Persian script, so they are not in the output either (``من`` "man" -> ``mn``,
``صبح`` "sobh" -> ``sbh``): the result is a strict transliteration with the script's long vowels, not the
spelling a Persian speaker would type. It keeps every word and is reversible enough for a reader of Persian, and it
is a script the model never sees in training. Persian and Arabic-Indic digits become ASCII digits, Persian
punctuation its ASCII counterpart; Latin letters, ASCII digits, spaces and anything not in the table pass through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ZWNJ = "\u200c"
CONSONANTS: Mapping[str, str] = {
    "ب": "b", "پ": "p", "ت": "t", "ث": "s", "ج": "j", "چ": "ch", "ح": "h", "خ": "kh", "د": "d", "ذ": "z",
    "ر": "r", "ز": "z", "ژ": "zh", "س": "s", "ش": "sh", "ص": "s", "ض": "z", "ط": "t", "ظ": "z", "ع": "'",
    "غ": "gh", "ف": "f", "ق": "gh", "ک": "k", "ك": "k", "گ": "g", "ل": "l", "م": "m", "ن": "n", "ء": "'",
    "ئ": "y", "ة": "e",
}  # fmt: skip
"""Letters with one Latin value whatever their context."""
VOWEL_LETTERS = {"ا": "a", "آ": "a", "أ": "a", "إ": "e", "ؤ": "o"}
"""Letters that always stand for a vowel."""
MARKS = {"\u064b": "n", "\u064e": "a", "\u0650": "e", "\u064f": "o", "\u0651": "", "\u0652": "", "\u0640": ""}
"""Diacritics (rare in MASSIVE: tanvin ``ً`` as in ``لطفاً`` lotfan, fatha, kasra, damma; shadda, sukun and the
tatweel are dropped)."""
OTHER = {"،": ",", "؛": ";", "؟": "?", "«": '"', "»": '"', "٪": "%",
         **{chr(0x06F0 + i): str(i) for i in range(10)}, **{chr(0x0660 + i): str(i) for i in range(10)}}
"""Persian punctuation and Persian / Arabic-Indic digits."""
_WAW, _YEH, _HEH, _ALEF = "و", "ی", "ه", "ا"
_LETTERS = {*CONSONANTS, *VOWEL_LETTERS, _WAW, _YEH, "ي", _HEH}


def _part(letters: str, whole_word: bool) -> str:
    """One ZWNJ-free run of Persian letters (and marks)."""
    if whole_word and letters == _WAW:
        return "va"
    out: list[str] = []
    prev_vowel = True  # the start of a part behaves as after a vowel (v- / y-)
    n = len(letters)
    i = 0
    while i < n:
        ch = "ی" if letters[i] == "ي" else letters[i]
        last = i == n - 1
        nxt = letters[i + 1] if not last else ""
        if ch in MARKS:
            out.append(MARKS[ch])
            i += 1
            continue
        if ch == _ALEF and i == 0 and nxt in (_WAW, _YEH, "ي"):
            out.append("u" if nxt == _WAW else "i")
            prev_vowel, i = True, i + 2
            continue
        if ch in VOWEL_LETTERS:
            out.append(VOWEL_LETTERS[ch])
            prev_vowel = True
        elif ch == _WAW:
            out.append("v" if prev_vowel else "o" if last else "u")
            prev_vowel = not prev_vowel
        elif ch == _YEH:
            out.append("y" if prev_vowel else "i")
            prev_vowel = not prev_vowel
        elif ch == _HEH:
            final = last or all(c in MARKS for c in letters[i + 1:])
            out.append("e" if final and not prev_vowel and i > 0 else "h")
            prev_vowel = out[-1] == "e"
        else:
            out.append(CONSONANTS[ch])
            prev_vowel = False
        i += 1
    return "".join(out)


def romanize_persian(text: str) -> str:
    """``text`` in Persian script transliterated to Latin letters (the rules in this module's docstring).

    >>> romanize_persian("این هفته ساعت پنج صبح بیدارم کن")
    "in hfte sa't pnj sbh bidarm kn"
    >>> romanize_persian("خانه‌ها و روز")
    'khaneha va ruz'
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _LETTERS or ch in MARKS:
            j = i
            while j < n and (text[j] in _LETTERS or text[j] in MARKS or text[j] == ZWNJ):
                j += 1
            parts = text[i:j].split(ZWNJ)
            out.extend(_part(p, whole_word=len(parts) == 1) for p in parts)
            i = j
        else:
            out.append(OTHER.get(ch, "" if ch == ZWNJ else ch))
            i += 1
    return "".join(out)


# ------------------------------------------------------------------------------------------ derived datasets
DERIVED: dict[str, dict[str, Any]] = {
    "massive_fa_latn": {
        "base": "massive_fa", "language": "fa-Latn", "transform": romanize_persian,
        "note": "massive_fa with every utterance romanised by soi.data.translit.romanize_persian (Persian in "
                "Latin letters, 'Finglish'); same ids' line numbers, parallel_id and gold intent, so it is parallel "
                "with massive_en and massive_fa; derived at load time, no files of its own",
    },
}
"""Datasets computed at load time from a registered one: ``base`` (the dataset read), ``language`` (the code every
row gets), ``transform`` (applied to ``text`` and ``text_pair``)."""
