"""Bootstrap statistics: exact against bench.measure.metrics, a hand-computed bootstrap distribution, paired
differences, the two-stage bootstrap over seeds and clips on hand-built runs, Holm's correction by hand, stored
predictions round-trip exactly, and the report files."""
from __future__ import annotations

import numpy as np
import pytest

from bench.measure import metrics, predictions, statistics
from data.schema import MARS, AttributeGroup, AttributeSchema

ONE_BINARY = AttributeSchema("one", (AttributeGroup("x", ("x",), "{}", binary=True),))


def _random_predictions(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, MARS.num_columns), dtype=np.int64)
    for group, cols in zip(MARS.groups, MARS.group_slices(), strict=True):
        if group.binary:
            labels[:, cols.start] = rng.random(n) < 0.3
        else:
            labels[np.arange(n), cols.start + rng.integers(0, group.width, n)] = 1
    probs = np.clip(0.3 * labels + 0.7 * rng.random(labels.shape), 0, 1)  # often wrong
    return probs, labels


def test_resampled_metrics_equal_metrics_evaluate_on_the_same_clips():
    probs, labels = _random_predictions()
    weights = statistics.resample_counts(len(probs), resamples=5, seed=3)
    fast = statistics.resampled_metrics(probs, labels, MARS, weights)
    for b, counts in enumerate(weights):
        clips = np.repeat(np.arange(len(probs)), counts.astype(int))  # the resample as a list of clips
        slow = metrics.evaluate(probs[clips], labels[clips], MARS)
        for metric in statistics.METRICS:
            assert fast[metric][b] == pytest.approx(slow[metric], abs=1e-12)


def test_bootstrap_distribution_of_a_two_clip_case_matches_the_hand_computation():
    """Clip A: truth 1, predicted 1; clip B: truth 0, predicted 1. Resamples AA (p 1/4): macro-F1 1 (only class 1,
    F1 1); AB (p 1/2): class 1 F1 2/3, class 0 F1 0 -> 1/3; BB (p 1/4): 0. The 95 % interval is [0, 1]."""
    probs, labels = np.array([[0.9], [0.9]]), np.array([[1], [0]])
    weights = statistics.resample_counts(2, resamples=4000, seed=1)
    macro = statistics.resampled_metrics(probs, labels, ONE_BINARY, weights)["macro_f1"]
    assert set(np.round(macro, 12)) == {0.0, round(1 / 3, 12), 1.0}
    assert np.mean(macro == 1.0) == pytest.approx(0.25, abs=0.03)
    assert np.mean(np.isclose(macro, 1 / 3)) == pytest.approx(0.5, abs=0.03)
    assert statistics.interval(macro) == (0.0, 1.0)
    assert statistics.interval(np.arange(101) / 100) == pytest.approx((0.025, 0.975))


def _record(strategy: str, probs, labels, seed: int = 0) -> dict:
    config = {"data": {"dataset": "synthetic", "frames": 2}, "model": {"backbone": "tiny"},
              "train": {"batch_size": 16, "seed": seed, "threshold": 0.45}}
    return {"run": {"strategy": strategy, "status": "ok", "config": config},
            "metrics": {"test_predictions": predictions.encode(probs, labels)}}


def test_paired_difference_of_identical_predictions_is_exactly_zero_and_a_better_model_is_resolved():
    probs, labels = _random_predictions(n=200)
    perfect = labels.astype(np.float64) * 0.9 + 0.05
    stats = statistics.setting_stats(statistics.load_predictions(
        [_record("full", probs, labels), _record("frozen", probs, labels), _record("oracle", perfect, labels)]),
        resamples=500)[0]
    rows = {(r["strategy"], r["reference"], r["metric"]): r for r in statistics.paired_rows(stats)}
    same = rows[("frozen", "full", "macro_f1")]
    assert (same["difference"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    assert (same["p_raw"], same["verdict"]) == (1.0, statistics.NO_DIFFERENCE)
    better = rows[("oracle", "full", "macro_f1")]
    assert better["verdict"] == "better" and better["ci_low"] > 0 and better["difference"] > 0
    assert rows[("full", "oracle", "macro_f1")]["verdict"] == "worse"


def test_stored_predictions_round_trip_exactly_and_give_the_recorded_metrics():
    probs, labels = _random_predictions()
    probs = probs.astype(np.float32)  # what the model produces
    back_probs, back_labels = predictions.decode(predictions.encode(probs, labels))
    assert np.array_equal(back_probs, probs) and np.array_equal(back_labels, labels)
    assert metrics.evaluate(back_probs, back_labels, MARS) == metrics.evaluate(probs, labels, MARS)
    with pytest.raises(predictions.PredictionsError):
        predictions.decode({"shape": [2, 2], "probs": "not base64 zlib", "labels": ""})


def test_several_seeds_give_mean_std_and_interval_and_the_report_names_the_resolved_strategies(tmp_path):
    probs, labels = _random_predictions(n=60)
    perfect = labels.astype(np.float64) * 0.9 + 0.05
    records = [_record("full", probs, labels, seed=0), _record("full", np.clip(probs + 0.02, 0, 1), labels, seed=1),
               _record("frozen", probs, labels), _record("oracle", perfect, labels)]
    written, paragraph = statistics.write_statistics(records, tmp_path, resamples=1000)
    assert [p.name for p in written] == ["statistics.md", "statistics.csv", "paired_comparisons.csv"]
    text = written[0].read_text()
    assert "better `oracle`" in text and "no detectable difference `frozen`" in text
    assert "better `oracle`" in paragraph
    import pandas as pd

    table = pd.read_csv(written[1])
    full = table[(table["strategy"] == "full") & (table["metric"] == "macro_f1")].iloc[0]
    assert full["seeds"] == 2 and full["std"] >= 0 and full["ci_low"] <= full["mean"] <= full["ci_high"]
    assert full["noise"] == "seeds and clips"
    pairs = pd.read_csv(written[2])
    assert len(pairs) == 2 * 3 * 3  # both orders of 3 pairs, 3 metrics
    assert set(pairs["verdict"]) <= {"better", "worse", statistics.NO_DIFFERENCE}
    assert (pairs["p_adjusted"] >= pairs["p_raw"]).all() and (pairs["family_size"] == 3).all()
    assert (pairs["seeds"] == 1).all()  # full shares only seed 0 with frozen and oracle: paired on that seed
    assert statistics.write_statistics([{"run": {"status": "ok", "strategy": "x"}, "metrics": {}}], tmp_path) \
        == ([], "")


# ---- two-stage bootstrap and Holm on hand-built runs -------------------------------------------------------------

HAND = ("hand", "none", 1, 1)  # a setting
CLIPS = 200


def _hand_run(strategy: str, seed: int, accuracy: float) -> statistics.RunPredictions:
    """One binary attribute, half the clips positive; right on a random ``accuracy`` share of the clips (the share
    depends on the seed), wrong with full confidence on the others."""
    labels = (np.arange(CLIPS) % 2)[:, None]
    wrong = np.random.default_rng([seed, *map(ord, strategy)]).permutation(CLIPS) >= round(accuracy * CLIPS)
    pred = np.where(wrong[:, None], 1 - labels, labels)
    return statistics.RunPredictions(strategy, HAND, seed, 0.1 + 0.8 * pred, labels, ONE_BINARY, 0.5)


def _macro_pair(runs, strategy: str, reference: str, resamples: int = 2000) -> dict:
    stats = statistics.setting_stats(runs, resamples=resamples)[0]
    rows = statistics.paired_rows(stats)
    return next(r for r in rows if (r["strategy"], r["reference"], r["metric"]) == (strategy, reference, "macro_f1"))


def test_a_difference_that_holds_on_every_seed_is_better_over_seeds_and_clips():
    runs = [_hand_run(name, seed, acc) for seed in (0, 1, 2) for name, acc in (("good", 0.9), ("poor", 0.7))]
    row = _macro_pair(runs, "good", "poor")
    assert (row["seeds"], row["noise"], row["family_size"]) == (3, "seeds and clips", 1)
    assert row["verdict"] == "better" and row["p_adjusted"] < 0.01 and row["ci_low"] > 0


def test_seeds_that_disagree_give_no_detectable_difference_where_one_seed_alone_would_call_it():
    runs = [_hand_run("a", 0, 0.9), _hand_run("b", 0, 0.7), _hand_run("a", 1, 0.7), _hand_run("b", 1, 0.9)]
    seed_zero = _macro_pair(runs[:2], "a", "b")  # clips only: seed 0 says a is far better
    assert (seed_zero["noise"], seed_zero["verdict"]) == ("clips only", "better")
    both = _macro_pair(runs, "a", "b")  # seed 1 says the opposite; the seed stage sees both
    assert (both["seeds"], both["noise"], both["verdict"]) == (2, "seeds and clips", statistics.NO_DIFFERENCE)
    assert both["p_raw"] > 0.5 and both["ci_low"] < 0 < both["ci_high"]


def test_a_difference_on_one_seed_only_is_not_detectable_though_the_seed_mean_over_clips_alone_would_call_it():
    runs = [_hand_run("a", 0, 0.9), _hand_run("b", 0, 0.7), _hand_run("a", 1, 0.8), _hand_run("b", 1, 0.8)]
    stats = statistics.setting_stats(runs, resamples=2000)[0]
    seed_mean = stats.per_seed["a"]["macro_f1"].mean(0) - stats.per_seed["b"]["macro_f1"].mean(0)  # (B,)
    assert statistics.bootstrap_p(seed_mean) < 0.01  # clip noise only: a resolved +10 points
    # drawing seeds too: a quarter of the resamples hold seed 1 only, where a - b is about 0
    row = _macro_pair(runs, "a", "b")
    assert row["verdict"] == statistics.NO_DIFFERENCE and 0.1 < row["p_raw"] < 0.5 and row["ci_low"] < 0


def test_holm_adjusted_p_values_match_the_hand_computation():
    # sorted p times (m - k + 1): 0.01*4, 0.02*3, 0.03*2, 0.5*1, then running maximum
    assert statistics.holm([0.01, 0.02, 0.03, 0.5]) == pytest.approx([0.04, 0.06, 0.06, 0.5])
    # order restored; 0.3*2 = 0.6 stays above the last step's 0.5*1
    assert statistics.holm([0.5, 0.01, 0.3]) == pytest.approx([0.6, 0.03, 0.6])
    assert statistics.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert statistics.holm([]).size == 0


def test_two_sided_bootstrap_p_counts_both_tails_with_the_plus_one():
    assert statistics.bootstrap_p(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(2 * (1 + 1) / 5)
    assert statistics.bootstrap_p(np.arange(1.0, 10.0)) == pytest.approx(2 * 1 / 10)  # none at or below 0
    assert statistics.bootstrap_p(-np.arange(1.0, 10.0)) == pytest.approx(2 * 1 / 10)
    assert statistics.bootstrap_p(np.zeros(9)) == 1.0


def _one_pair_apart(differing: int) -> list[statistics.RunPredictions]:
    """``a`` right on every clip, ``b`` wrong on ``differing`` of them: a - b > 0 on a resample that draws any of
    those clips, so the raw p is about 2 (1 - differing / CLIPS) ** CLIPS."""
    a = _hand_run("a", 0, 1.0)
    b = statistics.RunPredictions("b", HAND, 0, a.probs.copy(), a.labels, ONE_BINARY, 0.5)
    b.probs[:differing] = 1 - b.probs[:differing]
    return [a, b]


def test_holm_turns_a_raw_difference_into_no_detectable_difference_in_a_larger_family():
    alone = _macro_pair(_one_pair_apart(4), "a", "b", resamples=4000)
    assert alone["p_raw"] == pytest.approx(2 * (1 - 4 / CLIPS) ** CLIPS, abs=0.008) and alone["verdict"] == "better"
    copies = [statistics.RunPredictions(name, HAND, 0, run.probs, run.labels, ONE_BINARY, 0.5)
              for name, run in (("c", _one_pair_apart(4)[0]), ("d", _one_pair_apart(4)[0]))]
    family = _macro_pair(_one_pair_apart(4) + copies, "a", "b", resamples=4000)  # 6 pairs, 3 of them a-like - b
    assert family["family_size"] == 6 and family["p_raw"] == alone["p_raw"]
    assert family["p_adjusted"] == pytest.approx(min(1.0, 6 * alone["p_raw"]))
    assert family["verdict"] == statistics.NO_DIFFERENCE and family["ci_low"] > 0  # the interval alone would say so


def test_one_seed_says_clips_only_and_several_seeds_say_seeds_and_clips(tmp_path):
    probs, labels = _random_predictions(n=40)
    better = np.clip(probs + 0.3 * (labels - 0.5), 0, 1)
    one = [_record("frozen", probs, labels), _record("lora", better, labels)]
    written, paragraph = statistics.write_statistics(one, tmp_path, resamples=500)
    text = written[0].read_text()
    assert "Noise covered: test clips only (clips only" in text and "clips only" in paragraph
    assert "family of 1 strategy pairs" in text and "Holm-Bonferroni" in text
    several = one + [_record("frozen", probs, labels, seed=1), _record("lora", better, labels, seed=1)]
    text = statistics.write_statistics(several, tmp_path, resamples=500)[0][0].read_text()
    assert "Noise covered: training seeds and test clips (2 seeds" in text and "clips only:" not in text
