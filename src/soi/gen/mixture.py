"""Controlled multilingual mixtures: a fixed English set plus ``k`` examples per *seen* language.

The design of Shimabucoro et al. (2025, "A Post-trainer's Guide to Multilingual Training Data"): every run trains
on the same ``english_n`` English examples plus ``k`` examples in each seen language, for a grid of ``k``; *unseen*
languages are only evaluated. Rows come from *pools*: lists of ``(dataset, split, languages)`` sources for the
``train``, ``validation`` and ``eval`` roles (e.g. math: English from gsm8k train, seen languages from mgsm test;
eval from mgsm test).

Parallel-aware assignment (no translation leak): rows are grouped by ``parallel_id`` (a row with a null
``parallel_id`` is its own group). Every group gets a seeded rank (``blake2b(seed, group)``, independent of the
pool contents). Eval rows are chosen first, per language, as the ``n_eval`` candidates of lowest rank; the groups
they use are *reserved*. Validation rows (English and seen languages) are then chosen the same way among
unreserved groups, and their groups are reserved too. Training rows come only from unreserved groups, so no
``parallel_id`` is ever in the training set *and* the validation or eval set, in any language. The English set
is the ``english_n`` lowest-ranked training candidates; each seen language's candidates are ordered by a
per-language rank (``parallel_train=True``: the shared rank, so the seen languages get translations of the same
items), and the set for ``k`` is the first ``k`` of that order: sets are nested (``k=8`` is a subset of ``k=32``)
and the same for every training seed.

Rows whose ``response`` is empty (MGSM ships only the answer number) get ``response_template`` filled with the
row's ``answer`` (default ``"#### {answer}"``) when used for training or validation: a known limitation, such rows
teach the answer format but no worked solution. Rows with neither a response nor an answer cannot be trained on.

Classification datasets can be pools too (:func:`classification_as_generation`): the prompt is the text, the
response the label name, e.g. intent on ``massive_en`` (the English set) + ``massive_fa`` (a seen language).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from soi._io import write_json
from soi.errors import SoiError

ROLES = ("train", "validation", "eval")
MANIFEST_FILE = "mixture.json"


@dataclass(frozen=True)
class PoolSource:
    """One source of rows: a registered dataset (or a data-spec YAML path / mapping), a split, a language filter.

    ``origin="hub"`` loads the registered dataset's hub equivalent (needs internet); ``"local"`` the offline copy.
    """

    dataset: str | Mapping[str, Any]
    split: str
    languages: tuple[str, ...] | None = None
    origin: str = "local"

    def describe(self) -> dict[str, Any]:
        name = self.dataset if isinstance(self.dataset, str) else dict(self.dataset).get("name", "<spec>")
        return {"dataset": name, "split": self.split, "languages": None if self.languages is None
                else list(self.languages), "origin": self.origin}


@dataclass(frozen=True)
class MixtureSpec:
    """What to build (see the module docstring). ``ks`` must be non-negative; ``0`` is the English-only run."""

    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    ks: tuple[int, ...]
    train: tuple[PoolSource, ...]
    eval: tuple[PoolSource, ...]
    validation: tuple[PoolSource, ...] = ()
    english: str = "en"
    english_n: int = 0
    n_eval: int = 50
    n_validation: int = 0
    seed: int = 0
    parallel_train: bool = False
    response_template: str | None = "#### {answer}"

    def __post_init__(self) -> None:
        langs = [self.english, *self.seen, *self.unseen]
        if len(set(langs)) != len(langs):
            raise SoiError(f"mixture: the English, seen and unseen languages overlap: {langs}")
        if not self.ks or any(int(k) < 0 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise SoiError(f"mixture.k must be distinct non-negative ints, got {list(self.ks)}")
        for name in ("english_n", "n_eval", "n_validation"):
            if int(getattr(self, name)) < 0:
                raise SoiError(f"mixture.{name} must be >= 0, got {getattr(self, name)}")
        if max(self.ks) > 0 and not self.seen:
            raise SoiError("mixture: k > 0 needs at least one seen language")

    @property
    def languages(self) -> list[str]:
        """English, then the seen, then the unseen languages."""
        return [self.english, *self.seen, *self.unseen]

    @property
    def trained_languages(self) -> list[str]:
        """Languages with training (and validation) rows: English when ``english_n > 0``, the seen ones when a k > 0."""
        return ([self.english] if self.english_n > 0 else []) + (list(self.seen) if max(self.ks) > 0 else [])


def group_key(row_id: str, parallel_id: str | None) -> str:
    """The leak-rule group: the ``parallel_id``, or the row's own id when it has none."""
    return f"p:{parallel_id}" if parallel_id is not None else f"id:{row_id}"


def _rank(seed: int, salt: str, key: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x1f{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class MixturePlan:
    """Row ids per role and language; ``train_order[lang]`` is the nested order (English: exactly ``english_n``).

    ``eval_ids`` has every seen and unseen language, and English when it is trained on or the eval pools have
    English rows.
    """

    eval_ids: dict[str, list[str]]
    validation_ids: dict[str, list[str]]
    train_order: dict[str, list[str]]
    reserved_groups: frozenset[str] = field(default_factory=frozenset)

    def train_ids(self, k: int, english: str = "en") -> dict[str, list[str]]:
        """Training ids for ``k``: the whole English set and the first ``k`` of every seen language."""
        return {lang: (ids if lang == english else ids[:k]) for lang, ids in self.train_order.items()}


def _candidates(table: pa.Table) -> dict[str, list[tuple[str, str]]]:
    """``{language: [(id, group)]}`` of a pool table, ids de-duplicated (first occurrence kept)."""
    out: dict[str, list[tuple[str, str]]] = {}
    seen_ids: set[str] = set()
    ids, langs, pids = (table.column(c).to_pylist() for c in ("id", "language", "parallel_id"))
    for rid, lang, pid in zip(ids, langs, pids, strict=True):
        if rid in seen_ids:
            continue
        seen_ids.add(rid)
        out.setdefault(lang, []).append((rid, group_key(rid, pid)))
    return out


def plan_mixture(train: pa.Table, validation: pa.Table | None, eval: pa.Table, spec: MixtureSpec) -> MixturePlan:
    """Assign row ids to eval / validation / train (pure; tables need ``id``, ``language``, ``parallel_id``).

    Raises :class:`SoiError` when a language has too few candidates for ``n_eval``, ``n_validation``,
    ``english_n`` or the largest ``k``.
    """
    reserved: set[str] = set()

    def pick(cands: dict[str, list[tuple[str, str]]], lang: str, n: int, role: str, field_name: str) -> list[str]:
        free = [(rid, g) for rid, g in cands.get(lang, []) if g not in reserved]
        if len(free) < n:
            after = " (after reserving eval/validation items)" if reserved else ""
            raise SoiError(f"mixture.{field_name}: language {lang!r} has {len(free)} {role} rows available{after}, "
                           f"{n} needed")
        free.sort(key=lambda x: (_rank(spec.seed, "", x[1]), x[0]))
        return [rid for rid, _ in free[:n]]

    def reserve(cands: dict[str, list[tuple[str, str]]], picked: dict[str, list[str]]) -> None:
        groups = {rid: g for pairs in cands.values() for rid, g in pairs}
        reserved.update(groups[rid] for ids in picked.values() for rid in ids)

    ev = _candidates(eval)
    # English is evaluated when it is trained on or the eval pools have English rows (oasst_fr has none).
    langs = [x for x in spec.languages if x != spec.english or spec.english_n > 0 or ev.get(x)]
    eval_ids = {lang: pick(ev, lang, spec.n_eval, "eval", "n_eval") for lang in langs}
    # Reserve every group an eval row uses, and pick all languages' eval rows against the same reserved set.
    reserve(ev, eval_ids)

    val_ids: dict[str, list[str]] = {}
    if spec.n_validation > 0 and spec.trained_languages:
        if validation is None:
            raise SoiError("mixture.n_validation > 0 needs validation sources")
        va = _candidates(validation)
        for lang in spec.trained_languages:
            val_ids[lang] = pick(va, lang, spec.n_validation, "validation", "n_validation")
        reserve(va, val_ids)

    tr = _candidates(train)
    order: dict[str, list[str]] = {}
    if spec.english_n > 0:
        order[spec.english] = pick(tr, spec.english, spec.english_n, "training", "english_n")
    kmax = max(spec.ks)
    for lang in spec.seen if kmax > 0 else ():
        free = [(rid, g) for rid, g in tr.get(lang, []) if g not in reserved]
        if len(free) < kmax:
            raise SoiError(f"mixture.k: seen language {lang!r} has {len(free)} training rows available (after "
                           f"reserving eval/validation items), the largest k is {kmax}")
        salt = "" if spec.parallel_train else f"train:{lang}"
        free.sort(key=lambda x: (_rank(spec.seed, salt, x[1]), x[0]))
        order[lang] = [rid for rid, _ in free[:kmax]]
    return MixturePlan(eval_ids, val_ids, order, frozenset(reserved))


def _concat(tables: Sequence[pa.Table]) -> pa.Table | None:
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def _load(source: PoolSource, data_dir: str | Path | None, where: str) -> pa.Table:
    from soi.data import load_split

    try:
        split = load_split(source.dataset, source.split, data_dir=data_dir, languages=source.languages,
                           source=source.origin)  # type: ignore[arg-type]
    except SoiError as exc:
        raise SoiError(f"{where}: {exc}") from None
    if split.type == "classification":
        return classification_as_generation(split.table)
    if split.type != "generative":
        raise SoiError(f"{where}: {split.name!r} is a {split.type} dataset; mixtures need generative rows "
                       "(prompt, response, answer) or classification rows (text, label)")
    return split.table.select(["id", "prompt", "response", "answer", "language", "source", "parallel_id"])


def classification_as_generation(table: pa.Table) -> pa.Table:
    """Classification rows as generation rows: the prompt is the ``text`` (a pair: ``text``, a newline,
    ``text_pair``), the response and the answer are the label *name* (e.g. MASSIVE's ``alarm_set``).

    So a classification task (intent on ``massive_en`` + ``massive_fa``) can be a cross-lingual SFT task, scored by
    comparing the generated label with the gold one; ``id``, ``language``, ``source`` and ``parallel_id`` are kept.
    """
    import pyarrow.compute as pc

    text = table.column("text")
    if "text_pair" in table.column_names:
        pair = table.column("text_pair")
        joined = pc.binary_join_element_wise(text, pair, "\n")
        text = pc.if_else(pc.is_null(pair), text, joined)
    label = table.column("label").cast(pa.string())

    def optional(name: str) -> Any:
        return table.column(name) if name in table.column_names else pa.nulls(table.num_rows, pa.string())

    return pa.table({"id": table.column("id"), "prompt": text, "response": label, "answer": label,
                     "language": table.column("language"), "source": optional("source"),
                     "parallel_id": optional("parallel_id")})


class Mixture:
    """A built mixture: the plan plus the rows, for every ``k`` of the grid."""

    def __init__(self, spec: MixtureSpec, plan: MixturePlan, rows: Mapping[str, dict[str, Any]],
                 task: str = "task") -> None:
        self.spec = spec
        self.plan = plan
        self.task = task
        self._rows = dict(rows)

    # ------------------------------------------------------------------ rows
    def _row(self, rid: str, *, needs_response: bool) -> dict[str, Any]:
        row = dict(self._rows[rid])
        row["task"] = self.task
        if needs_response and not (row.get("response") or "").strip():
            if row.get("answer") is None or self.spec.response_template is None:
                raise SoiError(f"mixture: row {rid!r} has an empty response and no answer to build one from "
                               "(set response_template, or drop that source from the train/validation pools)")
            row["response"] = self.spec.response_template.format(answer=row["answer"])
            row["response_filled"] = True
        return row

    def train_rows(self, k: int) -> list[dict[str, Any]]:
        """Training rows for ``k`` (English first, then each seen language in rank order)."""
        if k not in self.spec.ks:
            raise SoiError(f"k={k} is not in the mixture's grid {list(self.spec.ks)}")
        ids = self.plan.train_ids(k, self.spec.english)
        return [self._row(rid, needs_response=True) for lang in ids for rid in ids[lang]]

    def validation_rows(self) -> list[dict[str, Any]]:
        """Validation rows (English and seen languages), for checkpoint selection."""
        return [self._row(rid, needs_response=True) for ids in self.plan.validation_ids.values() for rid in ids]

    def eval_rows(self, language: str | None = None) -> list[dict[str, Any]]:
        """Eval rows of one language (all languages when ``None``); responses are the references, as stored."""
        langs = list(self.plan.eval_ids) if language is None else [language]
        return [self._row(rid, needs_response=False) for lang in langs for rid in self.plan.eval_ids[lang]]

    # -------------------------------------------------------------- manifest
    def manifest(self, k: int, sources: Mapping[str, Sequence[PoolSource]] | None = None) -> dict[str, Any]:
        """JSON-able record of the mixture for ``k``: ids per language per split, counts, seed, sources."""
        train = self.plan.train_ids(k, self.spec.english)
        filled = {lang: sum(1 for rid in ids if not (self._rows[rid].get("response") or "").strip())
                  for lang, ids in train.items()}
        srcs = sources or {"train": self.spec.train, "validation": self.spec.validation, "eval": self.spec.eval}
        return {
            "task": self.task, "k": int(k), "ks": [int(x) for x in self.spec.ks], "seed": self.spec.seed,
            "english": self.spec.english, "english_n": self.spec.english_n, "seen": list(self.spec.seen),
            "unseen": list(self.spec.unseen), "parallel_train": self.spec.parallel_train,
            "response_template": self.spec.response_template,
            "sources": {role: [s.describe() for s in srcs[role]] for role in ROLES},
            "counts": {"train": {lang: len(ids) for lang, ids in train.items()},
                       "validation": {lang: len(ids) for lang, ids in self.plan.validation_ids.items()},
                       "eval": {lang: len(ids) for lang, ids in self.plan.eval_ids.items()}},
            "responses_from_template": {lang: n for lang, n in filled.items() if n},
            "ids": {"train": train, "validation": self.plan.validation_ids, "eval": self.plan.eval_ids},
        }

    def to_dataset(self, k: int) -> Any:
        """The mixture for ``k`` as a ``datasets.DatasetDict`` (``train``, ``validation``, ``eval``; empty roles
        left out), with :meth:`manifest` as JSON in each split's ``info.description``. Train and validation rows
        carry the responses trained on (templated where the source had none: ``response_filled``)."""
        from soi.data.split import hf_dataset

        try:
            import datasets
        except ImportError:
            raise SoiError("Mixture.to_dataset needs the 'datasets' package: pip install 'soi[train]'") from None
        columns = ["id", "prompt", "response", "answer", "language", "source", "parallel_id", "task",
                   "response_filled"]
        schema = pa.schema([(c, pa.bool_() if c == "response_filled" else pa.string()) for c in columns])
        manifest = self.manifest(k)
        out = {}
        for role, rows in (("train", self.train_rows(k)), ("validation", self.validation_rows()),
                           ("eval", self.eval_rows())):
            if rows:
                table = pa.Table.from_pylist([{c: r.get(c, False if c == "response_filled" else None)
                                               for c in columns} for r in rows], schema=schema)
                out[role] = hf_dataset(table, provenance={"soi": "mixture", **manifest}, split=role, name=self.task)
        return datasets.DatasetDict(out)

    def save_manifest(self, path: str | Path, k: int) -> Path:
        """Write :meth:`manifest` as JSON (atomically)."""
        path = Path(path)
        write_json(path, self.manifest(k))
        return path


def build_mixture(spec: MixtureSpec, *, data_dir: str | Path | None = None, task: str = "task",
                  where: str = "mixture") -> Mixture:
    """Load the pools of ``spec`` and plan the mixture (see the module docstring)."""
    cache: dict[tuple[Any, ...], pa.Table] = {}

    def role(sources: Iterable[PoolSource], name: str) -> pa.Table | None:
        tables = []
        for i, s in enumerate(sources):
            key = (repr(s.dataset), s.split, s.languages, s.origin)
            if key not in cache:
                cache[key] = _load(s, data_dir, f"{where}.{name}[{i}]")
            tables.append(cache[key])
        return _concat(tables)

    train, validation, ev = role(spec.train, "train"), role(spec.validation, "validation"), role(spec.eval, "eval")
    if ev is None:
        raise SoiError(f"{where}.eval: no eval sources")
    if train is None:
        if spec.english_n > 0 or max(spec.ks) > 0:
            raise SoiError(f"{where}.train: no training sources")
        train = ev.slice(0, 0)
    plan = plan_mixture(train, validation, ev, spec)
    rows: dict[str, dict[str, Any]] = {}
    wanted = {rid for ids in plan.eval_ids.values() for rid in ids}
    wanted |= {rid for ids in plan.validation_ids.values() for rid in ids}
    wanted |= {rid for ids in plan.train_order.values() for rid in ids}
    for table in (t for t in (train, validation, ev) if t is not None):
        for row in table.to_pylist():
            if row["id"] in wanted and row["id"] not in rows:
                rows[row["id"]] = row
    return Mixture(spec, plan, rows, task=task)
