"""Per-example tables and summaries of small hand-made runs, and analyze_run's files."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from soi.analysis import CategoryRules, analyze, analyze_run, per_example_table, summarize
from soi.analysis.categories import SOI_CATEGORIES
from soi.errors import SoiError
from soi.store import RunMeta, RunWriter, examples_table, load_dynamics

TASKS = {"nli": ["entailment", "neutral", "contradiction"], "sst2": ["negative", "positive"]}

# six examples, E = 4 checkpoints, default late_fraction .5 -> early cutoff ceil(2) = 2
#  idx id  task  source lang gold  pred per checkpoint  correct   soi
#  0   e0  nli   snli   en   0     0 0 0 0              1111      always_correct
#  1   e1  nli   xnli   de   2     0 2 2 2              0111      learned_early (k = 2)
#  2   e2  nli   xnli   en   1     0 0 1 1              0011      learned_late (k = 3)
#  3   e3  sst2  sst    en   1     1 0 1 1              1011      forgettable_recovered
#  4   e4  sst2  sst    en   0     0 1 0 1              1010      forgettable_lost (2 events)
#  5   e5  sst2  imdb   de   1     0 0 0 0              0000      never_learned
IDS = ["e0", "e1", "e2", "e3", "e4", "e5"]
TASK = ["nli", "nli", "nli", "sst2", "sst2", "sst2"]
SOURCE = ["snli", "xnli", "xnli", "sst", "sst", "imdb"]
LANGUAGE = ["en", "de", "en", "en", "en", "de"]
GOLD = [0, 2, 1, 1, 0, 1]
PRED = np.array([[0, 0, 0, 0], [0, 2, 2, 2], [0, 0, 1, 1], [1, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]])
# p_gold and confidence (mean): .8, .55, .4, .6, .5, .15; all .5, nli 1.75/3, sst2 1.25/3
P_GOLD = np.array([[0.6, 0.8, 0.9, 0.9], [0.2, 0.5, 0.7, 0.8], [0.1, 0.2, 0.6, 0.7],
                   [0.6, 0.3, 0.7, 0.8], [0.7, 0.4, 0.6, 0.3], [0.1, 0.2, 0.1, 0.2]])
CONF = [0.8, 0.55, 0.4, 0.6, 0.5, 0.15]
# margin = 2 p - 1 -> AUM = 2 conf - 1; loss = 1 - p -> mean loss = 1 - conf
AUM = [0.6, 0.1, -0.2, 0.2, 0.0, -0.7]
MEAN_LOSS = [0.2, 0.45, 0.6, 0.4, 0.5, 0.85]
# e0: deviations -.2, 0, .1, .1 -> var .06/4 = .015
VAR0 = math.sqrt(0.015)
STEPS = [10, 20, 30, 40]
SOI = ["always_correct", "learned_early", "learned_late", "forgettable_recovered", "forgettable_lost",
       "never_learned"]


@pytest.fixture
def hand_run(tmp_path, write_run):
    examples = examples_table(IDS, GOLD, task=TASK, source=SOURCE, language=LANGUAGE,
                              text=[f"text {i}" for i in range(6)])
    return write_run(tmp_path / "hand", TASKS, examples, PRED, P_GOLD, margin=2 * P_GOLD - 1, loss=1 - P_GOLD,
                     steps=STEPS, ranks=2)


def test_per_example_columns_and_values(hand_run):
    table = per_example_table(load_dynamics(hand_run))
    assert table.column_names == [
        "idx", "example_id", "task", "source", "language", "gold", "gold_label", "final_pred", "confidence",
        "variability", "correctness", "correctness_frac", "forgetfulness", "forgetting_events",
        "threshold_closeness", "first_correct", "first_learned", "final_correct", "aum", "mean_loss", "soi",
        "text"]
    d = table.to_pydict()
    assert d["idx"] == [0, 1, 2, 3, 4, 5]
    assert d["example_id"] == IDS
    assert d["task"] == TASK
    assert d["source"] == SOURCE
    assert d["language"] == LANGUAGE
    assert d["gold"] == GOLD
    assert d["gold_label"] == ["entailment", "contradiction", "neutral", "positive", "negative", "positive"]
    assert d["final_pred"] == [0, 2, 1, 1, 1, 0]
    assert d["soi"] == SOI
    assert d["text"] == [f"text {i}" for i in range(6)]
    assert d["correctness"] == [4, 3, 2, 3, 2, 0]
    assert d["correctness_frac"] == [1.0, 0.75, 0.5, 0.75, 0.5, 0.0]
    assert d["forgetting_events"] == [0, 0, 0, 1, 2, 0]
    assert d["forgetfulness"] == [0, 0, 0, 1, 2, 1000]
    assert d["first_correct"] == [0, 1, 2, 0, 0, -1]
    assert d["first_learned"] == [0, 1, 2, 2, -1, -1]
    assert d["final_correct"] == [True, True, True, True, False, False]
    np.testing.assert_allclose(d["confidence"], CONF, atol=1e-6)
    np.testing.assert_allclose(d["threshold_closeness"], [c * (1 - c) for c in CONF], atol=1e-6)
    np.testing.assert_allclose(d["variability"][0], VAR0, atol=1e-6)
    np.testing.assert_allclose(d["aum"], AUM, atol=1e-6)
    np.testing.assert_allclose(d["mean_loss"], MEAN_LOSS, atol=1e-6)


def test_gold_label_and_soi_are_dictionaries(hand_run):
    table = per_example_table(load_dynamics(hand_run))
    soi = table["soi"].combine_chunks()
    assert soi.dictionary.to_pylist() == list(SOI_CATEGORIES)
    assert soi.indices.to_pylist() == [0, 1, 2, 3, 4, 5]
    df = table.to_pandas()
    assert df["gold_label"].astype(str).tolist() == ["entailment", "contradiction", "neutral", "positive",
                                                     "negative", "positive"]


def test_late_fraction_moves_learned_late(hand_run):
    # late_fraction 1.0: cutoff 4 -> e2 (k = 3) becomes learned_early; 0.25: cutoff 1 -> e1 (k = 2) late
    dyn = load_dynamics(hand_run)
    assert per_example_table(dyn, late_fraction=1.0)["soi"].to_pylist()[1:3] == ["learned_early"] * 2
    assert per_example_table(dyn, late_fraction=0.25)["soi"].to_pylist()[1:3] == ["learned_late"] * 2


def test_include_ci(hand_run):
    # e0: v = .015 -> sqrt(.015 + .015^2 / 3) = sqrt(.015075)
    table = per_example_table(load_dynamics(hand_run), include_ci=True)
    assert table["variability"][0].as_py() == pytest.approx(math.sqrt(0.015075), abs=1e-6)


def _shares(counts: dict[str, int], n: int) -> dict[str, float]:
    return {k: v / n for k, v in counts.items()}


def test_summarize_hand_counts(hand_run):
    dyn = load_dynamics(hand_run)
    s = summarize(dyn, per_example_table(dyn))
    assert s["n_examples"] == 6 and s["n_checkpoints"] == 4
    assert s["checkpoints"] == [0, 1, 2, 3]
    assert s["steps"] == STEPS
    assert s["early_cutoff"] == 2 and s["late_fraction"] == 0.5
    assert s["categories"] == list(SOI_CATEGORIES)
    assert s["category_column"] == "soi"
    assert (s["model"], s["setting"], s["seed"]) == ("hand", "hand-made", 7)
    assert s["recording_mode"] == "train-pass" and s["checkpoint_unit"] == "epoch"
    # correct per checkpoint (rows e0..e5): t1 1 0 0 1 1 0 = 3; t2 1 1 0 0 0 0 = 2; t3 1 1 1 1 1 0 = 5;
    # t4 1 1 1 1 0 0 = 4
    acc_all = [3 / 6, 2 / 6, 5 / 6, 4 / 6]
    np.testing.assert_allclose(s["accuracy_per_checkpoint"], acc_all, atol=1e-12)
    one_each = dict.fromkeys(SOI_CATEGORIES, 1)
    g = s["groups"]
    assert set(g) == {"all", "task", "source", "language"}
    overall = g["all"]["all"]
    assert overall["n"] == 6
    assert overall["counts"] == one_each
    assert overall["shares"] == pytest.approx(_shares(one_each, 6))
    assert overall["final_accuracy"] == pytest.approx(4 / 6)
    assert overall["mean_confidence"] == pytest.approx(0.5, abs=1e-6)

    zero = dict.fromkeys(SOI_CATEGORIES, 0)
    nli = zero | {"always_correct": 1, "learned_early": 1, "learned_late": 1}
    sst2 = zero | {"forgettable_recovered": 1, "forgettable_lost": 1, "never_learned": 1}
    assert list(g["task"]) == ["nli", "sst2"]
    assert g["task"]["nli"]["n"] == 3 and g["task"]["sst2"]["n"] == 3
    assert g["task"]["nli"]["counts"] == nli
    assert g["task"]["sst2"]["counts"] == sst2
    assert g["task"]["nli"]["shares"] == pytest.approx(_shares(nli, 3))
    # nli rows e0..e2 per checkpoint: 1 0 0 | 1 1 0 | 1 1 1 | 1 1 1; sst2 e3..e5: 1 1 0 | 0 0 0 | 1 1 0 | 1 0 0
    np.testing.assert_allclose(g["task"]["nli"]["accuracy_per_checkpoint"], [1 / 3, 2 / 3, 1, 1], atol=1e-12)
    np.testing.assert_allclose(g["task"]["sst2"]["accuracy_per_checkpoint"], [2 / 3, 0, 2 / 3, 1 / 3],
                               atol=1e-12)
    assert g["task"]["nli"]["final_accuracy"] == pytest.approx(1.0)
    assert g["task"]["sst2"]["final_accuracy"] == pytest.approx(1 / 3)
    assert g["task"]["nli"]["mean_confidence"] == pytest.approx(1.75 / 3, abs=1e-6)
    assert g["task"]["sst2"]["mean_confidence"] == pytest.approx(1.25 / 3, abs=1e-6)

    # sources (sorted): imdb {e5}, snli {e0}, sst {e3, e4}, xnli {e1, e2}
    assert list(g["source"]) == ["imdb", "snli", "sst", "xnli"]
    assert [g["source"][k]["n"] for k in g["source"]] == [1, 1, 2, 2]
    assert g["source"]["xnli"]["counts"] == zero | {"learned_early": 1, "learned_late": 1}
    assert g["source"]["sst"]["counts"] == zero | {"forgettable_recovered": 1, "forgettable_lost": 1}
    assert g["source"]["imdb"]["counts"] == zero | {"never_learned": 1}
    # sst e3, e4 per checkpoint: 1 1 | 0 0 | 1 1 | 1 0; xnli e1, e2: 0 0 | 1 0 | 1 1 | 1 1
    np.testing.assert_allclose(g["source"]["sst"]["accuracy_per_checkpoint"], [1, 0, 1, 0.5], atol=1e-12)
    np.testing.assert_allclose(g["source"]["xnli"]["accuracy_per_checkpoint"], [0, 0.5, 1, 1], atol=1e-12)
    assert g["source"]["sst"]["mean_confidence"] == pytest.approx(0.55, abs=1e-6)

    # languages (sorted): de {e1, e5}, en {e0, e2, e3, e4}
    assert list(g["language"]) == ["de", "en"]
    de = zero | {"learned_early": 1, "never_learned": 1}
    en = zero | {"always_correct": 1, "learned_late": 1, "forgettable_recovered": 1, "forgettable_lost": 1}
    assert g["language"]["de"]["counts"] == de
    assert g["language"]["en"]["counts"] == en
    assert g["language"]["en"]["shares"] == pytest.approx(_shares(en, 4))
    # de e1, e5: 0 0 | 1 0 | 1 0 | 1 0; en e0, e2, e3, e4: 1 0 1 1 | 1 0 0 0 | 1 1 1 1 | 1 1 1 0
    np.testing.assert_allclose(g["language"]["de"]["accuracy_per_checkpoint"], [0, 0.5, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(g["language"]["en"]["accuracy_per_checkpoint"], [0.75, 0.25, 1, 0.75],
                               atol=1e-12)
    assert g["language"]["de"]["mean_confidence"] == pytest.approx(0.35, abs=1e-6)


def test_single_group_tags(tmp_path, write_run):
    """source defaults to the task, language to 'und'; single groups summarise like 'all'."""
    examples = examples_table(["a", "b", "c"], [1, 0, 1], task="sst2")
    pred = np.array([[1, 1], [1, 0], [0, 0]])  # correct: 11, 01, 00 (E = 2: cutoff 1, so 01 is late)
    run = write_run(tmp_path / "one", {"sst2": ["negative", "positive"]}, examples, pred,
                    np.full((3, 2), 0.5))
    res = analyze(load_dynamics(run))
    assert res.table["source"].to_pylist() == ["sst2"] * 3
    assert res.table["language"].to_pylist() == ["und"] * 3
    assert "text" not in res.table.column_names  # all-null text is dropped
    assert res.table["soi"].to_pylist() == ["always_correct", "learned_late", "never_learned"]
    g = res.summary["groups"]
    assert list(g["task"]) == ["sst2"] and list(g["source"]) == ["sst2"] and list(g["language"]) == ["und"]
    for grp in (g["task"]["sst2"], g["source"]["sst2"], g["language"]["und"]):
        assert grp == g["all"]["all"]
    assert g["all"]["all"]["accuracy_per_checkpoint"] == [1 / 3, 2 / 3]


RULES = CategoryRules({
    "hard": "confidence < 0.3",                                   # e5 (.15)
    "lost": "soi == 'forgettable_lost' or confidence < 0.2",     # e4; e5 matches too but 'hard' came first
    "nli_good": "task == 'nli' and correctness >= 3",             # e0 (4), e1 (3); e2 has 2
    "gold_pos": "gold == 1 and source == 'sst' and language == 'en'",  # e3
}, default="rest")
CUSTOM = ["nli_good", "nli_good", "rest", "gold_pos", "lost", "hard"]


def test_rules_category_column_and_custom_summary(hand_run):
    res = analyze(load_dynamics(hand_run), rules=RULES)
    assert res.table.column_names[-2:] == ["category", "text"]
    assert res.table["category"].to_pylist() == CUSTOM
    assert res.table["category"].combine_chunks().dictionary.to_pylist() == ["hard", "lost", "nli_good",
                                                                              "gold_pos", "rest"]
    custom = res.summary["custom"]
    assert custom["category_column"] == "category"
    assert custom["categories"] == ["hard", "lost", "nli_good", "gold_pos", "rest"]
    assert custom["groups"]["all"]["all"]["counts"] == {"hard": 1, "lost": 1, "nli_good": 2, "gold_pos": 1,
                                                        "rest": 1}
    assert custom["groups"]["task"]["nli"]["counts"] == {"hard": 0, "lost": 0, "nli_good": 2, "gold_pos": 0,
                                                         "rest": 1}
    assert custom["groups"]["task"]["sst2"]["shares"] == pytest.approx(
        {"hard": 1 / 3, "lost": 1 / 3, "nli_good": 0.0, "gold_pos": 1 / 3, "rest": 0.0})
    assert custom["rules"] == dict(RULES.rules) | {"<default>": "rest"}
    # the SOI summary is unchanged by rules
    assert res.summary["categories"] == list(SOI_CATEGORIES)
    assert res.table["soi"].to_pylist() == SOI


def test_rules_unknown_column(hand_run):
    with pytest.raises(SoiError, match="'final_pred_label'"):
        analyze(load_dynamics(hand_run), rules=CategoryRules({"x": "final_pred_label == 1"}))


def test_analyze_run_writes_and_reads_back(hand_run):
    res = analyze_run(hand_run, rules=RULES)
    out = hand_run / "analysis"
    assert sorted(p.name for p in out.iterdir()) == ["per_example.parquet", "summary.json"]
    back = pq.read_table(out / "per_example.parquet")
    assert back.schema.equals(res.table.schema)
    assert back.to_pydict() == res.table.to_pydict()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == res.summary
    assert summary["run"] == str(hand_run)
    assert summary["include_ci"] is False
    assert summary["groups"]["all"]["all"]["counts"] == dict.fromkeys(SOI_CATEGORIES, 1)
    assert summary["custom"]["groups"]["all"]["all"]["counts"]["nli_good"] == 2


def test_analyze_run_no_write_and_max_checkpoints(hand_run):
    res = analyze_run(hand_run, write=False, max_checkpoints=2)
    assert not (hand_run / "analysis").exists()
    # first two checkpoints only: correct 11, 01, 00, 10, 10, 00; E = 2 -> cutoff 1, so 01 is late
    assert res.summary["n_checkpoints"] == 2 and res.summary["steps"] == [10, 20]
    assert res.table["soi"].to_pylist() == ["always_correct", "learned_late", "never_learned",
                                            "forgettable_lost", "forgettable_lost", "never_learned"]
    assert res.table["final_pred"].to_pylist() == [0, 2, 0, 0, 1, 0]


def test_analyze_run_mode_folder(tmp_path):
    """A secondary recording mode is read from dynamics-<mode>/ and written to analysis-<mode>/."""
    run = tmp_path / "modes"
    meta = RunMeta(tasks={"t": ["a", "b"]}, recording_mode="eval-pass")
    RunWriter(run, meta).write_examples(examples_table(["x", "y"], [0, 1], task="t"))
    w = RunWriter(run, meta, mode="eval")
    # logits: x correct then wrong (gold 0), y wrong then correct (gold 1)
    w.write_logits(checkpoint=0, step=5, idx=np.array([0, 1]), logits=np.array([[2.0, 0.0], [2.0, 0.0]]),
                   gold=np.array([0, 1]))
    w.write_logits(checkpoint=1, step=9, idx=np.array([1, 0]), logits=np.array([[0.0, 2.0], [0.0, 2.0]]),
                   gold=np.array([1, 0]))
    res = analyze_run(run, mode="eval")
    assert (run / "analysis-eval" / "per_example.parquet").is_file()
    assert not (run / "analysis").exists()
    assert res.table["soi"].to_pylist() == ["forgettable_lost", "learned_late"]  # E = 2: cutoff 1
    assert res.summary["recording_mode"] == "eval-pass"
    # p_gold from logits [2, 0]: e^2 / (e^2 + 1) = 7.389056 / 8.389056 = 0.8807971; the other 0.1192029
    np.testing.assert_allclose(res.table["confidence"].to_pylist(), [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(res.table["aum"].to_pylist(), [0.0, 0.0], atol=1e-6)  # margins +2, -2
    np.testing.assert_allclose(res.table["variability"].to_pylist(), [0.8807971 - 0.5] * 2, atol=1e-6)


def test_gold_out_of_range_for_its_task(tmp_path, write_run):
    """gold 2 is a valid nli label but out of range for the two-label sst2."""
    examples = examples_table(["a", "b"], [2, 2], task=["nli", "sst2"])
    with pytest.raises(SoiError, match=r"gold label 2 of example 'b' out of range for task 'sst2' \(2 labels\)"):
        write_run(tmp_path / "bad", TASKS, examples, np.array([[2], [0]]), np.full((2, 1), 0.5))
        load_dynamics(tmp_path / "bad")


def test_shared_label_names_across_tasks(tmp_path, write_run):
    """Two tasks with the same label names (e.g. several binary tasks): gold_label and to_pandas work."""
    tasks = {"a": ["no", "yes"], "b": ["no", "yes"]}
    examples = examples_table(["p", "q", "r"], [1, 0, 1], task=["a", "b", "b"])
    run = write_run(tmp_path / "shared", tasks, examples, np.array([[1], [0], [0]]), np.full((3, 1), 0.6))
    res = analyze_run(run)
    assert res.table["gold_label"].to_pylist() == ["yes", "no", "yes"]
    df = res.to_pandas()
    assert df["gold_label"].astype(str).tolist() == ["yes", "no", "yes"]
    back = pq.read_table(run / "analysis" / "per_example.parquet").to_pandas()
    assert back["gold_label"].astype(str).tolist() == ["yes", "no", "yes"]
