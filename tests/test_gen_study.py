"""Generative study: config errors (one line, field path), summary/transfer/tables from results, end to end."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest

from soi.config.generative import GenerativeStudyConfig
from soi.errors import SoiError
from soi.store.summary import undeclared_fields
from soi.study.generative import mixture_spec, summarise, transfer_keys, write_tables

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOI_DATA_DIR") or REPO.parent / "shared" / "data")
needs_shared = pytest.mark.skipif(not (SHARED / "mgsm" / "info.json").is_file(),
                                  reason=f"shared data not found at {SHARED} (set SOI_DATA_DIR)")
BASE: dict[str, Any] = {"type": "generative", "name": "t", "model": "m", "tasks": {"math": {}},
                        "mixture": {"english_n": 8, "seen": ["es"], "unseen": ["de"], "k": [0, 4]}}


def _with(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


@pytest.mark.parametrize(("data", "message"), [
    (_with(tasks={"qa": {}}), "s.yaml: tasks.qa.kind: set kind (math, instruction or summarization) for task 'qa'"),
    (_with(mixture={"k": [4, 8]}), "s.yaml: mixture.k: k must include 0"),
    (_with(mixture={"k": [0, 0]}), "s.yaml: mixture.k: k must be distinct integers >= 0"),
    (_with(mixture={"k": [0, 8]}), "s.yaml: tasks.math.mixture.seen: k > 0 needs at least one seen language"),
    (_with(mixture={"seen": ["en"]}), "s.yaml: tasks.math.mixture: the English, seen and unseen languages overlap"),
    (_with(runs=[{"name": "a", "tasks": ["nope"]}]), "s.yaml: runs[0].tasks[0]: unknown task 'nope'"),
    (_with(runs=[{"name": "a", "tasks": ["math"]}, {"name": "a", "tasks": ["math"]}]),
     "s.yaml: runs[1].name: duplicate run name 'a'"),
    (_with(training={"lr": 0}), "s.yaml: training.lr: Input should be greater than 0"),
    (_with(training={"lr_schedule": "cosine"}), "s.yaml: training.lr_schedule: Input should be 'constant'"),
    (_with(training={"lora": {"r": 0}}), "s.yaml: training.lora.r: Input should be greater than or equal to 1"),
    (_with(extra=1), "s.yaml: extra: unknown field"),
    (_with(type="classification"), "s.yaml: type: Input should be 'generative'"),
    (_with(tasks={"math": {"metric": "rouge_l"}}), "s.yaml: tasks.math.metric: math tasks report exact_match"),
    (_with(tasks={"math": {"train": [{"dataset": "gsm8k"}]}}), "s.yaml: tasks.math.train[0].split: field required"),
    (_with(tasks={"summarization": {}}), "s.yaml: tasks.summarization: summarization has no offline data"),
    (_with(mixture={"response_template": "{x}"}), "s.yaml: mixture.response_template: must be a str.format"),
    (_with(tasks={"math": {}, "instruction": {"mixture": {"k": [0, 2]}}}, runs=[{"name": "mt",
     "tasks": ["math", "instruction"]}]), "s.yaml: runs[0].tasks: the tasks of a multi-task run need one k grid"),
    ([1, 2], "s.yaml: the study must be a mapping, got list"),
])
def test_config_errors_are_one_line_with_field(data: Any, message: str) -> None:
    with pytest.raises(SoiError) as info:
        GenerativeStudyConfig.from_dict(data, source="s.yaml")
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text


def test_config_defaults_and_layering(tmp_path: Path) -> None:
    data = _with(tasks={"math": {"mixture": {"n_eval": 5}}, "instruction": {"mixture": {"english_n": 0,
                                                                                       "seen": ["fr"]}}})
    cfg = GenerativeStudyConfig.from_dict(data)
    assert [(r.name, r.tasks, r.setting) for r in cfg.run_list()] == [("math", ["math"], "single"),
                                                                       ("instruction", ["instruction"], "single")]
    assert cfg.task_mixture("math") | {} == {"english": "en", "english_n": 8, "seen": ["es"], "unseen": ["de"],
                                             "k": [0, 4], "n_eval": 5, "n_validation": 0, "parallel_train": False,
                                             "response_template": "#### {answer}"}
    assert cfg.task_mixture("instruction")["seen"] == ["fr"] and cfg.task_mixture("instruction")["english_n"] == 0
    assert cfg.metric("math") == "exact_match" and cfg.metric("instruction") == "rouge_l"
    assert cfg.training.epochs == 1 and cfg.training.checkpoint_every == 50 and cfg.training.lr_schedule == "constant"
    spec = mixture_spec(cfg, "math")
    assert [s.describe()["dataset"] for s in spec.train] == ["gsm8k", "mgsm"] and spec.train[1].languages == ("es",)
    assert spec.eval[0].languages == ("en", "es", "de")
    # relative data-spec paths resolve against the YAML's folder
    path = tmp_path / "study.yaml"
    path.write_text("type: generative\nname: s\nmodel: m\ntasks:\n  summarization:\n    train: [{dataset: "
                    "./xlsum.yaml, split: train}]\n    eval: [{dataset: ./xlsum.yaml, split: test}]\n",
                    encoding="utf-8")
    cfg = GenerativeStudyConfig.from_yaml(path)
    assert cfg.tasks["summarization"].train[0].dataset == str(tmp_path / "xlsum.yaml")
    assert cfg.metric("summarization") == "rouge_l"


def test_packaged_crosslingual_yaml_validates() -> None:
    cfg = GenerativeStudyConfig.from_yaml(REPO / "src" / "soi" / "studies" / "crosslingual.yaml")
    assert cfg.model == "gemma3-270m" and cfg.kind("intent") == "instruction" and cfg.metric("intent") == "rouge_l"
    mix = cfg.task_mixture("intent")
    assert cfg.transfer_metrics("intent") == ["rouge_l", "label_match"] and cfg.scoring.scorers == ["label_match"]
    assert mix["seen"] == ["fa"] and mix["unseen"] == ["fa-Latn"] and mix["k"] == [0, 32, 128]
    assert mix["english_n"] == 64
    assert [s.dataset for s in cfg.tasks["intent"].train] == ["massive_en", "massive_fa"]
    assert [s.dataset for s in cfg.tasks["intent"].eval] == ["massive_en", "massive_fa", "massive_fa_latn"]


@needs_shared
def test_packaged_crosslingual_mixture_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    from soi.study.generative import build_mixtures

    monkeypatch.setenv("SOI_DATA_DIR", str(SHARED))
    cfg = GenerativeStudyConfig.from_yaml(REPO / "src" / "soi" / "studies" / "crosslingual.yaml")
    mix = build_mixtures(cfg)["intent"]
    assert [len(mix.train_rows(k)) for k in (0, 32, 128)] == [64, 96, 192]
    en, fa, latn = mix.eval_rows("en"), mix.eval_rows("fa"), mix.eval_rows("fa-Latn")
    assert len(en) == len(fa) == len(latn) == 60
    assert [r["answer"] for r in en] == [r["answer"] for r in fa] == [r["answer"] for r in latn]


def _result(task_langs: dict[str, dict[str, float]], k: int, seed: int, kind: str = "math") -> dict[str, Any]:
    metrics = ["exact_match"] if kind == "math" else ["rouge_l", "chrf", "language_fidelity"]
    return {"k": k, "seed": seed, "steps": 3, "best_step": 2, "n_train_by_language": {"math": {"en": 8, "es": k}},
            "eval": {"math": {"kind": kind, "metrics": metrics,
                              "languages": {lang: {"n": 10} | {m: v for m in metrics}
                                            for lang, v in task_langs.items()}}}}


def test_summarise_transfer_and_tables(tmp_path: Path) -> None:
    cfg = GenerativeStudyConfig.from_dict(_with(seeds=[0, 1]))
    vals = {(0, 0): {"en": 0.5, "es": 0.1, "de": 0.0}, (0, 1): {"en": 0.7, "es": 0.3, "de": 0.2},
            (4, 0): {"en": 0.6, "es": 0.4, "de": 0.1}, (4, 1): {"en": 0.6, "es": 0.4, "de": 0.1}}
    results = {("math", k, s): _result(v, k, s) for (k, s), v in vals.items()}
    summary = summarise(cfg, tmp_path, results)
    assert list(summary["runs"]) == ["math-k0", "math-k4"]
    run = summary["runs"]["math-k4"]
    assert run["k"] == 4 and run["setting"] == "single" and run["seeds"] == [0, 1]
    assert run["dirs"] == [str(tmp_path / "runs" / "math-k4" / f"seed-{s}") for s in (0, 1)]
    assert run["eval"]["math"]["languages"]["es"]["exact_match"]["mean"] == pytest.approx(0.4)
    assert run["eval"]["math"]["languages"]["de"]["group"] == "unseen"
    t = summary["transfer"]["math"]
    assert t["ks"] == [0, 4] and t["seen"] == ["es"] and t["unseen"] == ["de"] and t["metric"] == "exact_match"
    assert t["scores"]["es"]["0"]["values"] == [0.1, 0.3]
    assert t["gain"]["es"]["4"] == pytest.approx(0.4 - 0.2)
    assert t["gain"]["de"]["4"] == pytest.approx(0.1 - 0.1)
    assert t["gap"]["0"] == pytest.approx(0.2 - 0.1) and t["gap"]["4"] == pytest.approx(0.3)
    assert t["gain_per_100"]["es"]["4"] == pytest.approx(100 * 0.2 / 4)
    json.dumps(summary, allow_nan=False)
    paths = write_tables(summary, tmp_path)
    rows = list(csv.DictReader(paths["transfer"].open(encoding="utf-8")))
    es4 = next(r for r in rows if r["language"] == "es" and r["k"] == "4")
    assert float(es4["gain"]) == pytest.approx(0.2) and es4["group"] == "seen" and es4["relative_gain"] == "1.0"
    groups = list(csv.DictReader(paths["transfer_groups"].open(encoding="utf-8")))
    assert [float(r["gap"]) for r in groups] == pytest.approx([0.1, 0.3])
    scores = list(csv.DictReader(paths["scores"].open(encoding="utf-8")))
    assert len(scores) == 2 * 3 and float(scores[0]["exact_match_mean"]) == pytest.approx(0.6)


def test_transfer_keys_single_vs_multi_task() -> None:
    cfg = GenerativeStudyConfig.from_dict(_with(
        tasks={"math": {}, "instruction": {"mixture": {"english_n": 0, "seen": ["fr"], "unseen": []}}},
        runs=[{"name": "m", "tasks": ["math"]}, {"name": "i", "tasks": ["instruction"]},
              {"name": "mi", "tasks": ["math", "instruction"]}]))
    assert transfer_keys(cfg) == {("m", "math"): "m:math", ("i", "instruction"): "i:instruction",
                                  ("mi", "math"): "mi:math", ("mi", "instruction"): "mi:instruction"}
    assert cfg.run_list()[2].setting == "multi-task"


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    import torch

    from soi.model.causal import tiny_causal_lm

    torch.set_num_threads(1)
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm")


def _tiny_study(model: Path, **changes: Any) -> dict[str, Any]:
    data = {"type": "generative", "name": "tiny", "model": str(model), "data_dir": str(SHARED), "seeds": [0],
            "tasks": {"math": {}},
            "mixture": {"english_n": 4, "seen": ["es"], "unseen": ["de"], "k": [0, 2], "n_eval": 3,
                        "n_validation": 1},
            "training": {"max_steps": 2, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 1, "max_length": 96},
            "generation": {"max_new_tokens": 6, "batch_size": 8},
            "recording": {"probe": 2, "probe_max_new_tokens": 4}}
    return data | changes


@needs_shared
def test_end_to_end_tiny_math_study(tiny_lm: Path, tmp_path: Path) -> None:
    from soi.study.generative import run_generative_study

    cfg = GenerativeStudyConfig.from_dict(_tiny_study(tiny_lm))
    out = tmp_path / "study"
    summary = run_generative_study(cfg, out, progress=False)
    saved = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(summary))
    assert undeclared_fields(saved) == []  # docs/summary-schema.md lists every field written
    t = saved["transfer"]["math"]
    assert t["ks"] == [0, 2] and t["seen"] == ["es"] and t["unseen"] == ["de"] and t["metric"] == "exact_match"
    assert set(t["scores"]) == {"en", "es", "de"} and set(t["gap"]) == {"0", "2"}
    for lang in t["scores"]:
        for k in ("0", "2"):
            v = t["scores"][lang][k]["mean"]
            assert v in (0.0, 1 / 3, 2 / 3, 1.0)  # 3 eval items per language
            assert t["gain"][lang][k] == pytest.approx(v - t["scores"][lang]["0"]["mean"])
    for k in (0, 2):
        rdir = out / "runs" / f"math-k{k}" / "seed-0"
        result = json.loads((rdir / "result.json").read_text(encoding="utf-8"))
        assert result["steps"] == 2 and result["best_step"] in (1, 2) and set(result["validation_loss"]) == {"1", "2"}
        assert result["n_train_by_language"] == {"math": {"en": 4, "es": k}}
        man = json.loads((rdir / "mixture.json").read_text(encoding="utf-8"))["math"]
        assert man["counts"]["eval"] == {"en": 3, "es": 3, "de": 3} and man["k"] == k
        preds = [json.loads(x) for x in (rdir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(preds) == 9 and {p["language"] for p in preds} == {"en", "es", "de"}
        es = [p["exact_match"] for p in preds if p["language"] == "es"]
        assert result["eval"]["math"]["languages"]["es"]["exact_match"] == pytest.approx(sum(es) / 3)
        assert (rdir / "run.json").is_file() and (rdir / "probe" / "run.json").is_file()  # dynamics recorded
        shares = saved["runs"][f"math-k{k}"]["soi_shares"]["all"]["all"]
        assert sum(shares.values()) == pytest.approx(1.0)
    # eval items are parallel and never trained on
    man2 = json.loads((out / "runs" / "math-k2" / "seed-0" / "mixture.json").read_text(encoding="utf-8"))["math"]
    assert not set(man2["ids"]["train"]["es"]) & set(man2["ids"]["eval"]["es"])
    for name in ("scores", "transfer", "transfer_groups"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["transfer_math_curves.png",
                                                                   "transfer_math_heatmap.png",
                                                                   "transfer_math_intervals.png"]
    # resume: finished runs are not retrained
    before = (out / "runs" / "math-k2" / "seed-0" / "result.json").stat().st_mtime_ns
    again = run_generative_study(cfg, out, progress=False)
    assert again["transfer"] == summary["transfer"]
    assert (out / "runs" / "math-k2" / "seed-0" / "result.json").stat().st_mtime_ns == before
    changed = GenerativeStudyConfig.from_dict(_tiny_study(tiny_lm, training={"max_steps": 3, "batch_size": 2,
                                                                              "checkpoint_every": 1}))
    with pytest.raises(SoiError, match="run 'math-k0' seed 0 was trained with different settings"):
        run_generative_study(changed, out, progress=False)


def _write_toy_summaries(folder: Path) -> Path:
    """A parallel toy summarization set (en/fr/de) as user files + a data spec YAML."""
    texts = {"en": ("The {i} cats sleep on the warm red mat all day long.", "{i} cats sleep."),
             "fr": ("Les {i} chats dorment sur le tapis rouge toute la journée.", "{i} chats dorment."),
             "de": ("Die {i} Katzen schlafen den ganzen Tag auf der roten Matte.", "{i} Katzen schlafen.")}
    for split, items in (("train", range(0, 8)), ("test", range(8, 12))):
        rows = [{"id": f"{split}-{lang}-{i}", "prompt": f"Summarize: {p.format(i=i)}", "response": r.format(i=i),
                 "language": lang, "parallel_id": f"item-{i}"} for i in items for lang, (p, r) in texts.items()]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = folder / "toy.yaml"
    spec.write_text("name: toy_sum\ntype: generative\ntask: summarization\nfiles: {train: train.jsonl, test: "
                    "test.jsonl}\n", encoding="utf-8")
    return spec


def test_end_to_end_user_data_summarization_base_model_at_k0(tiny_lm: Path, tmp_path: Path) -> None:
    from soi.study.generative import run_generative_study

    _write_toy_summaries(tmp_path)
    study = tmp_path / "study.yaml"
    study.write_text(f"""type: generative
name: toy
model: {tiny_lm}
tasks:
  summarization:
    train: [{{dataset: ./toy.yaml, split: train}}]
    eval: [{{dataset: ./toy.yaml, split: test}}]
mixture: {{english_n: 0, seen: [fr], unseen: [de], k: [0, 2], n_eval: 2}}
training: {{max_steps: 1, batch_size: 2, checkpoint_every: 1, max_length: 96}}
generation: {{max_new_tokens: 4}}
recording: {{enabled: false}}
""", encoding="utf-8")
    summary = run_generative_study(study, tmp_path / "out", progress=False)
    assert undeclared_fields(json.loads((tmp_path / "out" / "summary.json").read_text("utf-8"))) == []
    k0 = json.loads((tmp_path / "out" / "runs" / "summarization-k0" / "seed-0" / "result.json").read_text("utf-8"))
    assert k0["steps"] == 0 and k0["n_train"] == 0 and k0["best_step"] is None  # base model, nothing to train
    k2 = json.loads((tmp_path / "out" / "runs" / "summarization-k2" / "seed-0" / "result.json").read_text("utf-8"))
    assert k2["steps"] == 1 and k2["n_train_by_language"] == {"summarization": {"fr": 2}}
    assert not (tmp_path / "out" / "runs" / "summarization-k2" / "seed-0" / "run.json").exists()  # no dynamics
    t = summary["transfer"]["summarization"]
    assert t["metric"] == "rouge_l" and set(t["scores"]) == {"en", "fr", "de"}  # English: eval pool has English rows
    langs = summary["runs"]["summarization-k2"]["eval"]["summarization"]["languages"]
    assert set(langs["fr"]) == {"n", "group", "rouge_l", "chrf", "language_fidelity"} and langs["de"]["n"] == 2
    assert summary["runs"]["summarization-k2"]["soi_shares"] == {}
    preds = (tmp_path / "out" / "runs" / "summarization-k0" / "seed-0" / "predictions.jsonl").read_text("utf-8")
    first = json.loads(preds.splitlines()[0])
    assert set(first) >= {"prediction", "reference", "rouge_l", "chrf", "language_fidelity"}


@needs_shared
def test_end_to_end_multi_task_run(tiny_lm: Path, tmp_path: Path) -> None:
    from soi.study.generative import run_generative_study

    spec = _write_toy_summaries(tmp_path)
    data = _tiny_study(tiny_lm, tasks={
        "math": {},
        "summarization": {"train": [{"dataset": str(spec), "split": "train"}],
                          "validation": [{"dataset": str(spec), "split": "train"}],  # carved from the same pool
                          "eval": [{"dataset": str(spec), "split": "test"}],
                          "mixture": {"english_n": 2, "seen": ["fr"], "unseen": ["de"], "n_eval": 2}}},
        runs=[{"name": "both", "tasks": ["math", "summarization"]}], recording={"enabled": False})
    summary = run_generative_study(GenerativeStudyConfig.from_dict(data), tmp_path / "out", progress=False)
    assert set(summary["transfer"]) == {"math", "summarization"}
    assert undeclared_fields(json.loads((tmp_path / "out" / "summary.json").read_text("utf-8"))) == []
    assert summary["transfer"]["summarization"]["seen"] == ["fr"] and summary["transfer"]["math"]["seen"] == ["es"]
    run = summary["runs"]["both-k2"]
    assert run["setting"] == "multi-task" and run["n_train"] == {"math": {"en": 4, "es": 2},
                                                                 "summarization": {"en": 2, "fr": 2}}
    man = json.loads((tmp_path / "out" / "runs" / "both-k2" / "seed-0" / "mixture.json").read_text("utf-8"))
    summ = man["summarization"]["ids"]
    assert set(man) == {"math", "summarization"} and summ["train"]["fr"][0].startswith("train-fr")
    items = {lang: {x.rsplit("-", 1)[1] for x in ids} for lang, ids in summ["validation"].items()}
    assert not {x.rsplit("-", 1)[1] for ids in summ["train"].values() for x in ids} & set().union(*items.values())
    result = json.loads((tmp_path / "out" / "runs" / "both-k2" / "seed-0" / "result.json").read_text("utf-8"))
    assert result["n_train"] == 4 + 2 + 2 + 2 and set(result["eval"]) == {"math", "summarization"}
    header = (tmp_path / "out" / "tables" / "scores.csv").read_text("utf-8").splitlines()[0].split(",")
    assert header[-8:] == ["exact_match_mean", "exact_match_std", "rouge_l_mean", "rouge_l_std", "chrf_mean",
                           "chrf_std", "language_fidelity_mean", "language_fidelity_std"]


# ------------------------------------------------------------------------------ TRL engine: models, resume
_KILL_SCRIPT = """
import os, signal, sys
import torch
from transformers import TrainerCallback
from soi.record import sft
from soi.study.generative import run_generative_study

torch.set_num_threads(1)
step = int(sys.argv[3])


class Kill(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)


init = sft.SoiSFTTrainer.__init__


def patched(self, *a, **k):
    init(self, *a, **k)
    self.add_callback(Kill())


sft.SoiSFTTrainer.__init__ = patched
run_generative_study(sys.argv[1], sys.argv[2], progress=False)
"""


def _resume_study(model: Path, **training: Any) -> dict[str, Any]:
    return _tiny_study(model, mixture={"english_n": 6, "seen": ["es"], "unseen": ["de"], "k": [0], "n_eval": 2,
                                       "n_validation": 2},
                       training={"max_steps": 6, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 2,
                                 "max_length": 96, **training})


@needs_shared
def test_lora_run_saves_a_merged_best_model_that_reproduces_the_predictions(tiny_lm: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from soi.gen.sft import generate
    from soi.study.generative import run_generative_study

    cfg = GenerativeStudyConfig.from_dict(_resume_study(tiny_lm, lora={"r": 4, "alpha": 8, "dropout": 0.0}))
    run_generative_study(cfg, tmp_path / "out", progress=False)
    rdir = tmp_path / "out" / "runs" / "math-k0" / "seed-0"
    result = json.loads((rdir / "result.json").read_text("utf-8"))
    assert result["steps"] == 6 and set(result["validation_loss"]) == {"2", "4", "6"}
    vl = {int(s): v for s, v in result["validation_loss"].items()}
    assert result["best_step"] == min(vl, key=vl.get)
    assert result["models"]["best"] == "model-best"
    assert (rdir / "model-final").is_dir() == (result["best_step"] != 6)
    assert not (rdir / "checkpoints").exists()  # Trainer checkpoints are for resume only
    model = AutoModelForCausalLM.from_pretrained(rdir / "model-best")
    assert not any("lora" in n for n, _ in model.named_parameters())  # merged into plain weights
    tok = AutoTokenizer.from_pretrained(rdir / "model-best")
    preds = [json.loads(x) for x in (rdir / "predictions.jsonl").read_text("utf-8").splitlines()]
    rows = {r["id"]: r for r in _eval_rows(cfg)}
    again = generate(model, tok, [rows[p["id"]]["prompt"] for p in preds], max_new_tokens=6, max_length=96)
    assert again == [p["prediction"] for p in preds]
    meta = json.loads((rdir / "run.json").read_text("utf-8"))
    assert meta["recording_mode"] == "train-pass" and meta["extra"]["best_step"] == result["best_step"]
    assert meta["extra"]["recorder"] == "soi.record.sft.SoiSFTTrainer"


def _eval_rows(cfg: GenerativeStudyConfig) -> list[dict[str, Any]]:
    from soi.study.generative import build_mixtures

    return build_mixtures(cfg)["math"].eval_rows()


@needs_shared
def test_killed_study_run_resumes_from_its_checkpoint_and_equals_an_uninterrupted_one(tiny_lm: Path,
                                                                                      tmp_path: Path) -> None:
    import subprocess
    import sys

    import numpy as np
    import yaml

    from soi.gen.record import load_generative
    from soi.store import load_dynamics
    from soi.study.generative import run_generative_study

    data = _resume_study(tiny_lm)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(study), str(tmp_path / "out"), "4"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    rdir = tmp_path / "out" / "runs" / "math-k0" / "seed-0"
    assert not (rdir / "result.json").exists() and (rdir / "checkpoints" / "checkpoint-4").is_dir()
    run_generative_study(study, tmp_path / "out", progress=False)  # `soi run` again: resumes at step 4
    result = json.loads((rdir / "result.json").read_text("utf-8"))
    assert result["resumed_from"] == 4 and result["steps"] == 6
    run_generative_study(study, tmp_path / "ref", progress=False)  # uninterrupted
    ref = tmp_path / "ref" / "runs" / "math-k0" / "seed-0"
    want = json.loads((ref / "result.json").read_text("utf-8"))
    assert result["validation_loss"] == pytest.approx(want["validation_loss"], rel=1e-6)
    assert result["best_step"] == want["best_step"] and result["eval"] == want["eval"]
    for sub in ("", "probe"):
        got, exp = load_dynamics(rdir / sub), load_dynamics(ref / sub)
        assert got.steps.tolist() == exp.steps.tolist() == [2, 4, 6]
        for col in ("p_gold", "margin", "loss"):
            np.testing.assert_allclose(getattr(got, col), getattr(exp, col), rtol=1e-6, atol=1e-7, err_msg=col)
        assert np.array_equal(got.pred, exp.pred)
        g, w = load_generative(rdir / sub), load_generative(ref / sub)
        np.testing.assert_allclose(g["logp"], w["logp"], rtol=1e-6, atol=1e-6)
    assert (rdir / "predictions.jsonl").read_text("utf-8") == (ref / "predictions.jsonl").read_text("utf-8")
