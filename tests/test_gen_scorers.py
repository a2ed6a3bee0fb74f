"""Switch-aware scoring, the scorer interface and registry, the local Hugging Face reward / judge scorers, and the
``scoring:`` section of generative study YAMLs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from soi.errors import SoiError
from soi.gen import metrics
from soi.gen.langid import language_fidelity, language_match
from soi.gen.scorers import (
    SCORERS,
    LocalJudgeScorer,
    RewardModelScorer,
    Scorer,
    ScoringPlan,
    aggregate_rows,
    default_plan,
    fill_rubric,
    make_scorer,
    metric_names,
    register_scorer,
    score_rows,
)

pytest.importorskip("py3langid")

# the same arithmetic item in four languages, answered in the right language, the wrong one, and with a bare number
ROWS = [{"prompt": "Wie viel ist zwei plus zwei?", "answer": "4", "response": "Zwei plus zwei ist vier. #### 4",
         "language": "de"},
        {"prompt": "¿Cuánto es dos más dos?", "answer": "4", "response": "Dos más dos son cuatro. #### 4",
         "language": "es"},
        {"prompt": "Combien font deux plus deux ?", "answer": "4", "response": "Deux plus deux font quatre. #### 4",
         "language": "fr"},
        {"prompt": "What is two plus two?", "answer": "4", "response": "Two plus two is four. #### 4",
         "language": "en"}]
PREDS = ["Zwei plus zwei ist vier, das ist die Antwort. #### 4",          # de, right language, correct
         "The answer is four because two plus two is four. #### 4",       # es prompt answered in English, correct
         "#### 4",                                                        # fr prompt, no letters: neutral
         "I do not know the answer to this question at all."]             # en, right language, unparsed
LANGS = ["en", "de", "es", "fr"]


# ------------------------------------------------------------------------------------------- the kernels
def test_switch_aware_by_hand() -> None:
    s, m = np.array([0.9, 0.3, 0.7, 0.0]), np.array([True, False, False, False])
    np.testing.assert_array_equal(metrics.switch_aware(s, m, "multiply"), [0.9, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(metrics.switch_aware(s, m, "cap", cap=0.5), [0.9, 0.3, 0.5, 0.0])
    np.testing.assert_array_equal(metrics.switch_aware(s, m, "off"), s)
    grid = np.array([[1.0, 0.6], [0.8, 0.2]])  # examples x checkpoints, one match per example
    np.testing.assert_array_equal(metrics.switch_aware(grid, np.array([[True], [False]]), "cap", 0.25),
                                  [[1.0, 0.6], [0.25, 0.2]])
    with pytest.raises(ValueError, match="switch mode must be one of off, multiply, cap"):
        metrics.switch_aware(s, m, "half")
    with pytest.raises(ValueError, match="cap must be in"):
        metrics.switch_aware(s, m, "cap", 2.0)


@settings(max_examples=100, deadline=None)
@given(s=hnp.arrays(np.float64, st.integers(0, 30), elements=st.floats(0, 1)), seed=st.integers(0, 2**16),
       cap=st.floats(0, 1))
def test_switch_aware_properties(s: np.ndarray, seed: int, cap: float) -> None:
    """Matching responses keep their score; multiply <= cap <= raw elementwise; cap never exceeds max(cap, raw)."""
    m = np.random.default_rng(seed).random(s.shape) < 0.5
    mul, capped = metrics.switch_aware(s, m, "multiply"), metrics.switch_aware(s, m, "cap", cap)
    np.testing.assert_array_equal(mul[m], s[m]) and np.testing.assert_array_equal(capped[m], s[m])
    assert np.all(mul <= capped) and np.all(capped <= s) and np.all(capped[~m] <= cap)


def test_answer_unparsed() -> None:
    np.testing.assert_array_equal(metrics.answer_unparsed(["#### 18", "the answer is five", "", "x 3.5 y"]),
                                  [False, True, True, False])


def test_language_match_treats_letterless_text_as_neutral() -> None:
    faithful, keep = language_match(PREDS, [r["language"] for r in ROWS], LANGS)
    np.testing.assert_array_equal(faithful, [True, False, False, True])
    np.testing.assert_array_equal(keep, [True, False, True, True])
    with pytest.raises(ValueError, match="4 texts but 1 expected"):
        language_match(PREDS, ["de"])


# --------------------------------------------------------------------------------------- plans and columns
def test_reference_scorers_wrap_the_kernels() -> None:
    refs = [r["response"] for r in ROWS]
    np.testing.assert_array_equal(make_scorer("exact_match").score(ROWS, PREDS),
                                  metrics.exact_match(PREDS, ["4"] * 4).astype(float))
    np.testing.assert_array_equal(make_scorer("rouge_l").score(ROWS, PREDS), metrics.rouge_l_f(PREDS, refs))
    chrf = make_scorer("chrf")
    np.testing.assert_array_equal(chrf.score(ROWS, PREDS), metrics.chrf(PREDS, refs))
    assert chrf.aggregate(ROWS, PREDS, chrf.score(ROWS, PREDS)) == metrics.corpus_chrf(PREDS, refs)
    np.testing.assert_array_equal(make_scorer("unparsed").score(ROWS, PREDS), [0, 0, 0, 1])
    fid = make_scorer("language_fidelity", candidates=LANGS)
    np.testing.assert_array_equal(fid.score(ROWS, PREDS), [1, 0, 0, 1])
    np.testing.assert_array_equal(fid.score(ROWS, PREDS), language_fidelity(PREDS, [r["language"] for r in ROWS],
                                                                            LANGS))
    assert fid.evaluate(ROWS, PREDS).raw == ["de", "en", "und", "en"]
    with pytest.raises(ValueError, match="4 rows but 3 predictions"):
        make_scorer("rouge_l").score(ROWS, PREDS[:3])


def test_label_match_by_hand() -> None:
    rows = [{"response": "iot_hue_lightoff", "language": "en"}, {"response": "iot_hue_lightoff", "language": "fa"},
            {"response": " alarm_set\n", "language": "fa-Latn"}, {"response": "", "answer": "18", "language": "en"},
            {"response": "play_music", "language": "en"}, {"response": "play_music", "language": "en"}]
    preds = ["iot_hue_lightoff", "iot_hue_lighton", "alarm_set ", "18", "Play_music", "play_music play_music"]
    lm = make_scorer("label_match")
    np.testing.assert_array_equal(lm.score(rows, preds), [1, 0, 1, 1, 0, 0])  # exact after strip; case counts
    # ROUGE-L gives the wrong light state 2/3 of the label's words (iot, hue | lightoff vs lighton)
    assert metrics.rouge_l_f(preds[1:2], ["iot_hue_lightoff"])[0] == pytest.approx(2 / 3)
    assert lm.aggregate(rows, preds, lm.score(rows, preds)) == pytest.approx(0.5)
    plan = default_plan("instruction", extra=[lm], candidates=["en", "fa", "fa-Latn"])
    per_row, _ = score_rows(plan, rows, preds)
    assert list(per_row) == ["rouge_l", "chrf", "language_fidelity", "label_match"]
    switched = default_plan("instruction", extra=[lm], switch_aware="multiply", candidates=["en", "fa"])
    assert switched.columns()[-2:] == ["label_match", "label_match_switch"]


@pytest.mark.parametrize("kind", ["math", "instruction", "summarization"])
@pytest.mark.parametrize("switch", ["off", "multiply", "cap"])
def test_plan_columns_equal_metric_names(kind: str, switch: str) -> None:
    """The study's column list (from names, before scoring) and the plan's (from the scorers) agree."""
    for extra in ([], ["label_match"], ["chrf", "unparsed", "label_match"]):
        plan = default_plan(kind, extra=[make_scorer(n) for n in extra], switch_aware=switch, candidates=LANGS)
        assert plan.columns() == metric_names(kind, extra, switch)
        assert len(set(plan.columns())) == len(plan.columns())


def test_math_plan_switch_aware_multiply_and_cap() -> None:
    plan = default_plan("math", switch_aware="multiply", candidates=LANGS)
    assert plan.columns() == ["exact_match", "exact_match_switch", "unparsed", "language_fidelity"]
    assert plan.columns() == metric_names("math", (), "multiply")
    per_row, raw = score_rows(plan, ROWS, PREDS)
    assert list(per_row) == plan.columns() and raw == {"language_fidelity": ["de", "en", "und", "en"]}
    np.testing.assert_array_equal(per_row["exact_match"], [1, 1, 1, 0])
    np.testing.assert_array_equal(per_row["exact_match_switch"], [1, 0, 1, 0])  # the English answer to es: 0
    np.testing.assert_array_equal(per_row["unparsed"], [0, 0, 0, 1])
    np.testing.assert_array_equal(per_row["language_fidelity"], [1, 0, 0, 1])  # "#### 4" is not faithful
    agg = aggregate_rows(plan, ROWS, PREDS, per_row)
    assert agg == {"exact_match": 0.75, "exact_match_switch": 0.5, "unparsed": 0.25, "language_fidelity": 0.5}
    alone, _ = score_rows(ScoringPlan([make_scorer("exact_match")], "multiply", candidates=tuple(LANGS)), ROWS, PREDS)
    assert list(alone) == ["exact_match", "exact_match_switch"]  # no fidelity scorer: identified on its own
    np.testing.assert_array_equal(alone["exact_match_switch"], per_row["exact_match_switch"])
    capped, _ = score_rows(default_plan("math", switch_aware="cap", switch_cap=0.5, candidates=LANGS), ROWS, PREDS)
    np.testing.assert_array_equal(capped["exact_match_switch"], [1, 0.5, 1, 0])


def test_instruction_plan_default_equals_todays_scores() -> None:
    """Without ``scoring:`` the plan reproduces the study's reference metrics exactly (same columns, values)."""
    plan = default_plan("instruction", candidates=LANGS)
    per_row, _ = score_rows(plan, ROWS, PREDS)
    refs = [r["response"] for r in ROWS]
    assert list(per_row) == ["rouge_l", "chrf", "language_fidelity"]
    np.testing.assert_array_equal(per_row["rouge_l"], metrics.rouge_l_f(PREDS, refs))
    np.testing.assert_array_equal(per_row["chrf"], metrics.chrf(PREDS, refs))
    agg = aggregate_rows(plan, ROWS, PREDS, per_row)
    assert agg["chrf"] == metrics.corpus_chrf(PREDS, refs) and agg["rouge_l"] == np.mean(per_row["rouge_l"])
    switched, _ = score_rows(default_plan("instruction", switch_aware="multiply", candidates=LANGS), ROWS, PREDS)
    assert list(switched) == ["rouge_l", "rouge_l_switch", "chrf", "chrf_switch", "language_fidelity"]
    np.testing.assert_array_equal(switched["chrf_switch"], switched["chrf"] * [1, 0, 1, 1])
    assert aggregate_rows(plan, ROWS, PREDS, switched)["chrf_switch"] == np.mean(switched["chrf_switch"])


def test_registry_custom_scorer_and_unknown_names() -> None:
    @register_scorer
    class LengthScorer(Scorer):
        name = "test_length"

        def score(self, rows: Any, predictions: Any) -> np.ndarray:
            return np.array([min(len(p) / 100, 1.0) for p in predictions])

    try:
        plan = default_plan("math", extra=[make_scorer("test_length")], switch_aware="multiply", candidates=LANGS)
        per_row, _ = score_rows(plan, ROWS, PREDS)
        assert plan.columns()[:4] == ["exact_match", "exact_match_switch", "test_length", "test_length_switch"]
        np.testing.assert_allclose(per_row["test_length_switch"], [len(PREDS[0]) / 100, 0, 0.06, len(PREDS[3]) / 100])
    finally:
        del SCORERS["test_length"]
    with pytest.raises(SoiError, match="unknown scorer 'bleu'; known: exact_match, unparsed, rouge_l"):
        make_scorer("bleu")
    with pytest.raises(SoiError, match="unknown task kind 'poetry'"):
        default_plan("poetry")
    with pytest.raises(SoiError, match="switch_aware must be one of off, multiply, cap"):
        default_plan("math", switch_aware="yes")


# ------------------------------------------------------------------------------ local Hugging Face models
def tiny_reward_model(path: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from soi.model.causal import byte_tokenizer

    tok = byte_tokenizer(chat_template=True)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, num_labels=1,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def test_reward_model_scalar_equals_a_single_example_forward(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tiny_reward_model(tmp_path / "rm")
    scorer = RewardModelScorer(str(path), batch_size=3)  # batches of 3 and 1: padding must not change a reward
    out = scorer.evaluate(ROWS, PREDS)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path).eval()
    expected = []
    for row, pred in zip(ROWS, PREDS, strict=True):
        text = tok.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                        {"role": "assistant", "content": pred}], tokenize=False)
        with torch.no_grad():
            expected.append(float(model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]))
    r = np.array([float(x) for x in out.raw or []])
    np.testing.assert_allclose(r, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.values, 1 / (1 + np.exp(-np.array(expected))), rtol=1e-4)
    assert len(set(np.round(r, 6))) == 4  # four different texts, four different rewards
    raw = RewardModelScorer(str(path), normalize="none")
    np.testing.assert_allclose(raw.score(ROWS, PREDS), r, rtol=1e-4, atol=1e-5)
    assert scorer.bounded and not raw.bounded
    assert "reward_model_switch" not in default_plan("math", extra=[raw], switch_aware="multiply").columns()


def test_local_judge_expected_rating_by_hand(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from soi.model.causal import tiny_causal_lm

    path = tiny_causal_lm(tmp_path / "lm", seed=3)
    scorer = LocalJudgeScorer(str(path), batch_size=3)
    out = scorer.evaluate(ROWS, PREDS)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    ids = [tok.encode(str(n), add_special_tokens=False)[0] for n in range(1, 6)]
    expected = []
    for row, pred in zip(ROWS, PREDS, strict=True):
        text = tok.apply_chat_template([{"role": "user", "content": fill_rubric(scorer.rubric, row, pred)}],
                                       tokenize=False, add_generation_prompt=True) + "Rating: [["
        with torch.no_grad():
            logits = model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1, ids].double()
        p = torch.softmax(logits, -1).numpy()
        expected.append(float(p @ np.arange(1, 6)))
    np.testing.assert_allclose([float(x) for x in out.raw or []], expected, rtol=1e-5)
    np.testing.assert_allclose(out.values, (np.array(expected) - 1) / 4, rtol=1e-5)
    assert np.all((out.values >= 0) & (out.values <= 1))
    # truncation keeps the end of the input (the "Rating: [[" the rating is read after)
    short = LocalJudgeScorer(str(path), max_length=40).evaluate(ROWS[:1], PREDS[:1])
    text = tok.apply_chat_template([{"role": "user", "content": fill_rubric(scorer.rubric, ROWS[0], PREDS[0])}],
                                   tokenize=False, add_generation_prompt=True) + "Rating: [["
    tail = torch.tensor([tok(text, add_special_tokens=False)["input_ids"][-40:]])
    with torch.no_grad():
        p = torch.softmax(model(input_ids=tail).logits[0, -1, ids].double(), -1).numpy()
    assert float((short.raw or [""])[0]) == pytest.approx(float(p @ np.arange(1, 6)), rel=1e-5)


def test_local_models_bad_input(tmp_path: Path) -> None:
    with pytest.raises(SoiError, match="cannot load the scoring model"):
        RewardModelScorer(str(tmp_path / "missing")).score(ROWS, PREDS)
    with pytest.raises(SoiError, match="normalize must be sigmoid or none"):
        RewardModelScorer("x", normalize="tanh")
    with pytest.raises(SoiError, match="local_judge rubric: the rubric must contain"):
        LocalJudgeScorer("x", rubric="{prompt}")


# ------------------------------------------------------------------------------------------ the YAML section
BASE = {"type": "generative", "name": "s", "model": "smollm2-135m", "tasks": {"math": {}},
        "mixture": {"english_n": 8, "seen": ["es"], "unseen": ["de"], "k": [0, 4]}}


def _error(tmp_path: Path, **changes: Any) -> str:
    from soi.config.generative import GenerativeStudyConfig

    data = copy.deepcopy(BASE) | changes
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SoiError) as exc:
        GenerativeStudyConfig.from_yaml(tmp_path / "s.yaml")
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize(("changes", "message"), [
    ({"scoring": {"scorers": ["jduge"]}}, "s.yaml: scoring.scorers[0]: unknown scorer 'jduge'; known: exact_match"),
    ({"scoring": {"scorers": ["chrf", "chrf"]}}, "s.yaml: scoring.scorers: scorer listed twice"),
    ({"scoring": {"scorers": ["judge"]}}, "s.yaml: scoring.judge.url: the judge scorer needs scoring.judge.url"),
    ({"scoring": {"scorers": ["judge"], "judge": {"url": "http://localhost:8000"}}},
     "s.yaml: scoring.judge.model: the judge scorer needs scoring.judge.model"),
    ({"scoring": {"judge": {"url": "http://x", "model": "m", "rubric": "{prompt} {answer}"}}},
     "s.yaml: scoring.judge.rubric: unknown placeholder(s) ['answer']"),
    ({"scoring": {"judge": {"timeout_s": 0}}}, "s.yaml: scoring.judge.timeout_s: Input should be greater than 0"),
    ({"scoring": {"scorers": ["reward_model"]}}, "s.yaml: scoring.reward_model.model: the reward_model scorer needs"),
    ({"scoring": {"scorers": ["local_judge"], "local_judge": {"model": "./nowhere"}}},
     "s.yaml: scoring.local_judge.model: local model path not found: ./nowhere"),
    ({"scoring": {"switch_aware": "yes"}}, "s.yaml: scoring.switch_aware: Input should be 'off', 'multiply' or 'cap'"),
    ({"scoring": {"switch_aware": "cap", "switch_cap": 1.5}}, "s.yaml: scoring.switch_cap: Input should be less"),
    ({"scoring": {"switch": "on"}}, "s.yaml: scoring.switch: unknown field"),
    ({"scoring": {"switch_aware": "multiply"}, "mixture": {"english_n": 8, "seen": ["es", "ti"], "k": [0, 4]}},
     "s.yaml: mixture.seen[1]: language 'ti' is unknown to the offline language identifier"),
    ({"scoring": {"switch_aware": "multiply"}, "tasks": {"math": {"mixture": {"unseen": ["tw"]}}}},
     "s.yaml: tasks.math.mixture.unseen[0]: language 'tw' is unknown"),
    ({"tasks": {"math": {"metric": "exact_match_switch"}}},
     "s.yaml: tasks.math.metric: math tasks report exact_match; got 'exact_match_switch'"),
])
def test_scoring_section_errors(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    assert _error(tmp_path, **changes).startswith(message)


def test_scoring_section_metrics(tmp_path: Path) -> None:
    from soi.config.generative import GenerativeStudyConfig

    data = copy.deepcopy(BASE) | {
        "tasks": {"math": {"metric": "exact_match_switch"}, "instruction": {"mixture": {"english_n": 0,
                                                                                        "seen": ["fr"]}}},
        "scoring": {"switch_aware": "multiply", "scorers": ["judge", "reward_model"],
                    "judge": {"url": "http://localhost:8000", "model": "qwen"},
                    "reward_model": {"model": "org/rm", "normalize": "none"}}}
    cfg = GenerativeStudyConfig.from_dict(data, source="s.yaml")
    assert cfg.metric("math") == "exact_match_switch"
    assert cfg.metrics("math") == ["exact_match", "exact_match_switch", "judge", "judge_switch", "reward_model",
                                   "unparsed", "language_fidelity"]
    assert cfg.metrics("instruction") == ["rouge_l", "rouge_l_switch", "chrf", "chrf_switch", "language_fidelity",
                                          "judge", "judge_switch", "reward_model"]
    plain = GenerativeStudyConfig.from_dict(copy.deepcopy(BASE), source="s.yaml")
    assert plain.metrics("math") == ["exact_match"] and plain.scoring.is_default
