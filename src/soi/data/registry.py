"""The dataset registry: known names, where their local copies live, and their Hugging Face hub equivalents.

Every registered dataset has a canonical local layout (``<data dir>/<name>/<split>.jsonl`` + ``info.json``, see
docs/data.md) and, where one exists, a hub equivalent with the column, split and label mappings that turn hub rows
into the same canonical rows (same label names, same label index order). Labels are mapped **by name**, never by
the hub's integer ids: e.g. MASSIVE's hub ``ClassLabel`` order differs from the alphabetical order used here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from soi.errors import SoiError

DATA_DIR_ENV = "SOI_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")
INFO_FILE = "info.json"

TaskType = Literal["classification", "generative"]


@dataclass(frozen=True)
class HubSource:
    """How to load one registered dataset from the Hugging Face hub and map it to canonical rows.

    ``columns`` maps canonical column -> hub column; ``splits`` maps soi split -> hub split (soi splits missing
    here are not available from the hub); ``label_map`` maps a hub label *name* (a ``ClassLabel`` name, or the
    raw value as a string for plain int/string columns) to the soi label name (identity where absent).
    ``configs`` maps language -> hub config for datasets with one config per language (MGSM); otherwise
    ``config`` is used and every row gets ``language``. ``parallel_id`` is a template over ``{split}`` (soi split)
    and ``{row}`` (row number in the hub split). ``answer_from`` derives the generative ``answer`` column:
    ``"gsm8k"`` (the number after ``####`` in the response, commas removed) or ``"number"`` (a numeric column).
    ``parquet_fallback``: when ``datasets`` refuses the repo's loading script, load its parquet export
    (``revision="refs/convert/parquet"``) instead.
    """

    path: str
    columns: Mapping[str, str]
    splits: Mapping[str, str]
    config: str | None = None
    configs: Mapping[str, str] | None = None
    language: str | None = None
    label_map: Mapping[str, str] = field(default_factory=dict)
    parallel_id: str | None = None
    answer_from: Literal["gsm8k", "number"] | None = None
    verified: bool = False
    note: str = ""
    parquet_fallback: bool = False  # retry the hub's parquet export when datasets refuses the repo's loading script

    @property
    def hub_id(self) -> str:
        return f"{self.path}:{self.config}" if self.config else self.path


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: static metadata (checked against ``info.json`` by the tests) and its hub source."""

    name: str
    task: str
    type: TaskType
    languages: tuple[str, ...]
    splits: Mapping[str, int]
    license: str
    labels: tuple[str, ...] | None = None
    hub: HubSource | None = None
    hub_note: str = ""  # what a user with internet would load (info.json "hub_equivalent")


_SENTIMENT2 = ("negative", "positive")
_MASSIVE_LABELS = (
    "alarm_query", "alarm_remove", "alarm_set", "audio_volume_down", "audio_volume_mute", "audio_volume_other",
    "audio_volume_up", "calendar_query", "calendar_remove", "calendar_set", "cooking_query", "cooking_recipe",
    "datetime_convert", "datetime_query", "email_addcontact", "email_query", "email_querycontact", "email_sendemail",
    "general_greet", "general_joke", "general_quirky", "iot_cleaning", "iot_coffee", "iot_hue_lightchange",
    "iot_hue_lightdim", "iot_hue_lightoff", "iot_hue_lighton", "iot_hue_lightup", "iot_wemo_off", "iot_wemo_on",
    "lists_createoradd", "lists_query", "lists_remove", "music_dislikeness", "music_likeness", "music_query",
    "music_settings", "news_query", "play_audiobook", "play_game", "play_music", "play_podcasts", "play_radio",
    "qa_currency", "qa_definition", "qa_factoid", "qa_maths", "qa_stock", "recommendation_events",
    "recommendation_locations", "recommendation_movies", "social_post", "social_query", "takeaway_order",
    "takeaway_query", "transport_query", "transport_taxi", "transport_ticket", "transport_traffic", "weather_query",
)  # fmt: skip
_MGSM_LANGUAGES = ("en", "bn", "de", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
_SPLITS3 = {"train": "train", "validation": "validation", "test": "test"}
_MASSIVE_NOTE = ("the hub repo ships a loading script (massive.py), which datasets>=4 refuses: soi then retries "
                 "the hub's parquet export (revision refs/convert/parquet); offline, put a canonical copy in "
                 "$SOI_DATA_DIR/<name>/ (docs/data.md)")
# MASSIVE 1.0 locales (FitzGerald et al., 2023): hub config -> soi language code; massive_<code> with '-' -> '_'
MASSIVE_LOCALES = {
    "af-ZA": "af", "am-ET": "am", "ar-SA": "ar", "az-AZ": "az", "bn-BD": "bn", "cy-GB": "cy", "da-DK": "da",
    "de-DE": "de", "el-GR": "el", "en-US": "en", "es-ES": "es", "fa-IR": "fa", "fi-FI": "fi", "fr-FR": "fr",
    "he-IL": "he", "hi-IN": "hi", "hu-HU": "hu", "hy-AM": "hy", "id-ID": "id", "is-IS": "is", "it-IT": "it",
    "ja-JP": "ja", "jv-ID": "jv", "ka-GE": "ka", "km-KH": "km", "kn-IN": "kn", "ko-KR": "ko", "lv-LV": "lv",
    "ml-IN": "ml", "mn-MN": "mn", "ms-MY": "ms", "my-MM": "my", "nb-NO": "nb", "nl-NL": "nl", "pl-PL": "pl",
    "pt-PT": "pt", "ro-RO": "ro", "ru-RU": "ru", "sl-SL": "sl", "sq-AL": "sq", "sv-SE": "sv", "sw-KE": "sw",
    "ta-IN": "ta", "te-IN": "te", "th-TH": "th", "tl-PH": "tl", "tr-TR": "tr", "ur-PK": "ur", "vi-VN": "vi",
    "zh-CN": "zh", "zh-TW": "zh-TW",
}  # fmt: skip
_MASSIVE_SPLITS = {"train": 11514, "validation": 2033, "test": 2974}
_MASSIVE_LICENSE = "CC BY 4.0 (Amazon MASSIVE 1.0; derived from SLURP, CC BY 4.0)"


def massive_entry(locale: str) -> DatasetEntry:
    """The registry entry of one MASSIVE locale (hub ``AmazonScience/massive:<locale>``, intents mapped by name)."""
    lang = MASSIVE_LOCALES[locale]
    hub = HubSource("AmazonScience/massive", {"text": "utt", "label": "intent", "orig_id": "id"}, _SPLITS3,
                    config=locale, language=lang, parallel_id="massive-{split}-{row}",
                    verified=locale in ("en-US", "fa-IR"), parquet_fallback=True,
                    note="intent ClassLabel in the hub's own order, mapped by name; " + _MASSIVE_NOTE)
    return DatasetEntry(f"massive_{lang.lower().replace('-', '_')}", "intent", "classification", (lang,),
                        dict(_MASSIVE_SPLITS), _MASSIVE_LICENSE, _MASSIVE_LABELS, hub,
                        f"AmazonScience/massive:{locale} (column 'intent')")

REGISTRY: dict[str, DatasetEntry] = {
    e.name: e
    for e in [
        DatasetEntry(
            "sst2", "sentiment", "classification", ("en",), {"train": 6920, "validation": 872, "test": 1821},
            "SST (Socher et al., 2013): research release, no explicit licence; repo MIT", _SENTIMENT2,
            HubSource("SetFit/sst2", {"text": "text", "label": "label"}, _SPLITS3, language="en",
                      label_map={"0": "negative", "1": "positive"}, verified=True,
                      note="sentence-level SST-2 with the same 6,920/872/1,821 split sizes"),
            "SetFit/sst2 (not nyu-mll/glue:sst2, the 67k phrase-level version with an unlabelled test split)",
        ),
        DatasetEntry(
            "mr", "sentiment", "classification", ("en",), {"train": 8530, "validation": 1066, "test": 1066},
            "Movie Review polarity v1.0 (Pang & Lee, 2005): research release, no explicit licence; repo MIT",
            _SENTIMENT2,
            HubSource("cornell-movie-review-data/rotten_tomatoes", {"text": "text", "label": "label"}, _SPLITS3,
                      language="en", label_map={"neg": "negative", "pos": "positive", "0": "negative",
                                                "1": "positive"},
                      note="same 10,662 sentences, but the hub's own 8530/1066/1066 split (rows differ per split)"),
            "cornell-movie-review-data/rotten_tomatoes (unverified)",
        ),
        DatasetEntry(
            "cr", "sentiment", "classification", ("en",), {"train": 3017, "validation": 377, "test": 377},
            "Customer Review data (Hu & Liu, 2004): research release, no explicit licence; repo MIT", _SENTIMENT2,
            HubSource("SetFit/SentEval-CR", {"text": "text", "label": "label"}, {"train": "train", "test": "test"},
                      language="en", label_map={"0": "negative", "1": "positive"},
                      note="the hub copy has train/test only, with its own split"),
            "SetFit/SentEval-CR (unverified)",
        ),
        DatasetEntry(
            "trec", "topic/question-type", "classification", ("en",),
            {"train": 4907, "validation": 545, "test": 500},
            "TREC question classification (Li & Roth, 2002): research release, no explicit licence; repo MIT",
            ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
            HubSource("CogComp/trec", {"text": "text", "label": "coarse_label"}, {"train": "train", "test": "test"},
                      language="en",
                      note="hub train = soi train + validation (5,452 rows); coarse_label; formerly 'trec'"),
            "CogComp/trec, coarse_label (unverified)",
        ),
        DatasetEntry(
            "airline", "sentiment", "classification", ("en",), {"train": 11589, "validation": 1448, "test": 1448},
            "CC BY-NC-SA 4.0 (Figure Eight / CrowdFlower 'Twitter US Airline Sentiment', as published on Kaggle)",
            ("negative", "neutral", "positive"),
            HubSource("osanseviero/twitter-airline-sentiment",
                      {"text": "text", "label": "airline_sentiment", "orig_id": "tweet_id"}, {"train": "train"},
                      language="en",
                      note="community copy; one split with all 14,640 source rows (duplicate tweet ids not removed)"),
            "none official; community copy osanseviero/twitter-airline-sentiment (unverified)",
        ),
        DatasetEntry(
            "mrpc", "paraphrase", "classification", ("en",), {"train": 3668, "validation": 408, "test": 1725},
            "Microsoft Research Paraphrase Corpus: MSR research licence (non-commercial research use)",
            ("not_equivalent", "equivalent"),
            HubSource("nyu-mll/glue", {"text": "sentence1", "text_pair": "sentence2", "label": "label",
                                       "orig_id": "idx"},
                      {"train": "train", "validation": "validation"}, config="mrpc", language="en", verified=True,
                      note="same raw text; GLUE's 408-pair validation set differs from soi's seeded carve; "
                           "GLUE's test labels are hidden (-1)"),
            "nyu-mll/glue:mrpc",
        ),
        DatasetEntry(
            "rte", "entailment", "classification", ("en",), {"train": 2490, "validation": 277},
            "GLUE RTE (PASCAL RTE1-3, RTE5): research use; no explicit licence", ("entailment", "not_entailment"),
            HubSource("nyu-mll/glue", {"text": "sentence1", "text_pair": "sentence2", "label": "label",
                                       "orig_id": "idx"},
                      {"train": "train", "validation": "validation"}, config="rte", language="en", verified=True,
                      note="the local copy is the hub export; GLUE's test labels are hidden (-1)"),
            "nyu-mll/glue:rte",
        ),
        DatasetEntry(
            "farstail", "entailment", "classification", ("fa",), {"train": 7266, "validation": 1537, "test": 1564},
            "Apache-2.0 (LICENSE in dml-qom/FarsTail at this commit)", ("entailment", "neutral", "contradiction"),
            None, "no official hub copy known; upstream github.com/dml-qom/FarsTail",
        ),
        massive_entry("en-US"),
        massive_entry("fa-IR"),
        DatasetEntry(
            "gsm8k", "math", "generative", ("en",), {"train": 7099, "validation": 374, "test": 1319},
            "MIT (Copyright (c) 2021 OpenAI)", None,
            HubSource("openai/gsm8k", {"prompt": "question", "response": "answer"}, {"train": "train", "test": "test"},
                      config="main", language="en", answer_from="gsm8k", verified=True,
                      note="hub train = soi train + validation (7,473 rows); parallel_id (MGSM links) not set"),
            "openai/gsm8k:main",
        ),
        DatasetEntry(
            "mgsm", "math", "generative", _MGSM_LANGUAGES, {"test": 2750}, "CC BY-SA 4.0 (MGSM, Google Research)",
            None,
            HubSource("juletxara/mgsm", {"prompt": "question", "answer": "answer_number"}, {"test": "test"},
                      configs={lang: lang for lang in _MGSM_LANGUAGES}, parallel_id="mgsm-{row}",
                      answer_from="number",
                      note="one config per language; ids are mgsm-test-<language>-<row>; contents not compared"),
            "juletxara/mgsm (one config per language; unverified)",
        ),
        DatasetEntry(
            "oasst_fr", "instruction", "generative", ("fr",), {"train": 230, "validation": 26},
            "Apache-2.0 (OpenAssistant oasst1 content). Note: the redistributing repo bofenghuang/vigogne declares "
            "CC BY-NC 4.0 for its data folder (DATA_LICENSE); treat as research / non-commercial to be safe",
            None, None,
            "OpenAssistant/oasst1 (filter lang == 'fr', follow the rank-0 reply; a message tree, not loadable "
            "row-by-row; unverified)",
        ),
    ]
}
REGISTRY |= {e.name: e for e in map(massive_entry, MASSIVE_LOCALES) if e.name not in REGISTRY}
HUB_ONLY = tuple(sorted(n for n in REGISTRY if n.startswith("massive_") and n not in ("massive_en", "massive_fa")))


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(REGISTRY)


def get_entry(name: str) -> DatasetEntry:
    """The registry entry for ``name`` (SoiError listing the known names otherwise)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise SoiError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())} "
                       "(or pass a DataSpec / YAML spec for your own files)") from None


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$SOI_DATA_DIR``, else ``./data``; it must exist."""
    if data_dir is not None:
        path, how = Path(data_dir), "the data_dir argument"
    elif os.environ.get(DATA_DIR_ENV):
        path, how = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    else:
        path, how = DEFAULT_DATA_DIR, f"the default ./data; no data_dir argument and ${DATA_DIR_ENV} unset"
    path = path.expanduser()
    if not path.is_dir():
        raise SoiError(f"data dir not found: {path} (from {how}); set {DATA_DIR_ENV}=<dir>, pass data_dir=<dir>, "
                       "or load from the hub with source='hub'")
    return path


def dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """``<data dir>/<name>``, which must hold an ``info.json``."""
    root = resolve_data_dir(data_dir)
    folder = root / name
    if not (folder / INFO_FILE).is_file():
        present = sorted(p.name for p in root.iterdir() if (p / INFO_FILE).is_file())
        raise SoiError(f"dataset {name!r} not found in data dir {root} (no {name}/{INFO_FILE}); "
                       f"present: {', '.join(present) or 'none'}; set {DATA_DIR_ENV}, pass data_dir, "
                       "or use source='hub'")
    return folder


_INFO_REQUIRED = ("name", "task", "type", "languages", "splits")


def read_info(folder: str | Path) -> dict[str, Any]:
    """Read and check a dataset folder's ``info.json``."""
    path = Path(folder) / INFO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SoiError("file not found", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SoiError(f"not valid JSON ({e})", path=path) from None
    if not isinstance(info, dict):
        raise SoiError("must be a JSON object", path=path)
    for key in _INFO_REQUIRED:
        if key not in info:
            raise SoiError(f"missing field {key!r}", path=path)
    if info["type"] not in ("classification", "generative"):
        raise SoiError(f"field 'type' must be 'classification' or 'generative', got {info['type']!r}", path=path)
    if not isinstance(info["splits"], dict) or not all(isinstance(v, int) for v in info["splits"].values()):
        raise SoiError("field 'splits' must map split name -> row count", path=path)
    if not isinstance(info["languages"], list) or not all(isinstance(x, str) for x in info["languages"]):
        raise SoiError("field 'languages' must be a list of language codes", path=path)
    if info["type"] == "classification":
        labels = info.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise SoiError("field 'labels' must be a non-empty list of label names", path=path)
        if len(set(labels)) != len(labels):
            raise SoiError("field 'labels' has duplicate names", path=path)
    return info


_RESEARCH = "research release, no explicit licence"
_SHORT_LICENSE = {
    "sst2": _RESEARCH, "mr": _RESEARCH, "cr": _RESEARCH, "trec": _RESEARCH, "rte": "GLUE RTE: research use",
    "airline": "CC BY-NC-SA 4.0", "mrpc": "MSR research licence (non-commercial)", "farstail": "Apache-2.0",
    "massive_en": "CC BY 4.0", "massive_fa": "CC BY 4.0", "gsm8k": "MIT", "mgsm": "CC BY-SA 4.0",
    "oasst_fr": "Apache-2.0 upstream; copy under CC BY-NC 4.0: research use",
}


def registry_table() -> str:
    """The registry as a Markdown table (name, task, languages, splits, license, hub equivalent)."""
    rows = ["| name | task | languages | splits (rows) | license | hub equivalent |", "|---|---|---|---|---|---|"]
    for name in dataset_names():
        if name in HUB_ONLY:
            continue
        e = REGISTRY[name]
        splits = " / ".join(f"{s} {n:,}" for s, n in e.splits.items())
        if e.hub is None:
            hub = f"none loadable: {e.hub_note}"
        else:
            hub = f"`{e.hub.hub_id}`" + ("" if e.hub.verified else " (unverified)") + f"; {e.hub.note}"
        lic = _SHORT_LICENSE.get(name, e.license)
        rows.append(f"| `{name}` | {e.task} | {', '.join(e.languages)} | {splits} | {lic} | {hub} |")
    langs = ", ".join(REGISTRY[n].languages[0] for n in HUB_ONLY)
    rows.append(f"| `massive_<code>` ({len(HUB_ONLY)} more locales, hub only: {', '.join(f'`{n}`' for n in HUB_ONLY)}) "
                f"| intent | {langs} | as `massive_en` | CC BY 4.0 | `AmazonScience/massive:<locale>` (unverified); "
                "no local copy: `origin: hub`, or a canonical folder `<name>/` in the data dir |")
    return "\n".join(rows) + "\n"
