"""Offline language identification for response-language fidelity.

Wraps ``py3langid`` (BSD-3-Clause; a maintained fork of langid.py, Lui & Baldwin 2012, "langid.py: An Off-the-shelf
Language Identification Tool"), whose naive-Bayes byte n-gram model for 97 languages ships inside the wheel: no
download, no network. Install it with ``pip install 'soi[gen]'``.

Fidelity (Shimabucoro et al. 2025 penalise answers in the wrong language) is the share of responses whose
identified language is the prompt's language. Texts without any letter (empty, only digits or punctuation) get the
code ``"und"`` and never count as faithful.

Codes with BCP 47 subtags (``fa-Latn``: Persian in Latin letters, ``zh-TW``) are identified as their primary
language subtag (:func:`base_language`): the identifier knows languages, not scripts or regions, so a response to a
``fa-Latn`` prompt is faithful when it is identified as Persian (``fa``), in either script. (In practice it rarely
is when written in Latin letters: the model was trained on Persian script; see docs/generative.md.)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from soi.errors import SoiError

UNDETERMINED = "und"


@functools.cache
def _identifier(candidates: tuple[str, ...] | None) -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise SoiError("language identification needs py3langid: pip install 'soi[gen]' (or py3langid)") from None
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if candidates is not None:
        unknown = sorted(set(candidates) - set(ident.labels))
        if unknown:
            raise SoiError(f"language identifier has no model for {unknown}; it knows: {', '.join(ident.labels)}")
        ident.set_languages(list(candidates))
    return ident


def base_language(code: str) -> str:
    """The primary language subtag of a BCP 47 code, the one the identifier knows: ``fa-Latn`` -> ``fa``."""
    return code.split("-", 1)[0]


def known_languages() -> list[str]:
    """ISO 639-1 codes the identifier can return (97 languages)."""
    return list(_identifier(None).labels)


def unknown_languages(codes: Iterable[str]) -> list[str]:
    """The codes in ``codes`` whose primary language the identifier has no model for (sorted, distinct)."""
    known = set(known_languages())
    return sorted({c for c in codes if base_language(c) not in known})


def identify(texts: Sequence[str], candidates: Iterable[str] | None = None) -> list[str]:
    """The most likely ISO 639-1 language of each text (``"und"`` for texts without letters).

    ``candidates`` restricts the choice to those languages (more reliable on short texts when the possible
    languages are known, e.g. a study's languages; subtags are dropped: ``fa-Latn`` is ``fa``); ``None`` uses all
    97.
    """
    cands = None if candidates is None else tuple(sorted({base_language(c) for c in candidates}))
    ident = _identifier(cands)
    out = []
    for text in texts:
        if not any(ch.isalpha() for ch in text):
            out.append(UNDETERMINED)
        else:
            out.append(str(ident.classify(text)[0]))
    return out


def language_fidelity(texts: Sequence[str], expected: str | Sequence[str],
                      candidates: Iterable[str] | None = None) -> np.ndarray:
    """Per-text bool: is the identified language the ``expected`` one (one code, or one code per text; compared
    by :func:`base_language`)?"""
    langs = identify(texts, candidates)
    want = [base_language(expected)] * len(langs) if isinstance(expected, str) else [base_language(x)
                                                                                     for x in expected]
    if len(want) != len(langs):
        raise ValueError(f"{len(texts)} texts but {len(want)} expected languages")
    return np.array([a == b for a, b in zip(langs, want, strict=True)], dtype=bool)


def language_match(texts: Sequence[str], expected: Sequence[str],
                   candidates: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(faithful, keep)`` per text: ``faithful`` = identified as the expected language; ``keep`` = faithful *or*
    without any letter (``"und"``: a bare ``#### 18`` is in no language, so switch-aware scoring leaves it alone);
    codes are compared by :func:`base_language`."""
    langs = np.array(identify(texts, candidates), dtype=object)
    want = np.array([base_language(x) for x in expected], dtype=object)
    if want.shape != langs.shape:
        raise ValueError(f"{len(texts)} texts but {len(want)} expected languages")
    faithful = langs == want
    return faithful.astype(bool), (faithful | (langs == UNDETERMINED)).astype(bool)
