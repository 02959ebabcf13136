"""Bootstrap statistics: exact against bench.measure.metrics, a hand-computed bootstrap distribution, paired
differences, stored predictions round-trip exactly, and the report files."""
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
    assert (same["difference"], same["ci_low"], same["ci_high"], same["resolved"]) == (0.0, 0.0, 0.0, False)
    better = rows[("oracle", "full", "macro_f1")]
    assert better["resolved"] and better["ci_low"] > 0 and better["difference"] > 0


def test_stored_predictions_round_trip_exactly_and_give_the_recorded_metrics():
    probs, labels = _random_predictions()
    probs = probs.astype(np.float32)  # what the model produces
    back_probs, back_labels = predictions.decode(predictions.encode(probs, labels))
    assert np.array_equal(back_probs, probs) and np.array_equal(back_labels, labels)
    assert metrics.evaluate(back_probs, back_labels, MARS) == metrics.evaluate(probs, labels, MARS)
    with pytest.raises(predictions.PredictionsError):
        predictions.decode({"shape": [2, 2], "probs": "not base64 zlib", "labels": ""})


def test_several_seeds_give_mean_std_and_interval_and_the_report_names_the_resolved_strategies(tmp_path):
    probs, labels = _random_predictions(n=200)
    perfect = labels.astype(np.float64) * 0.9 + 0.05
    records = [_record("full", probs, labels, seed=0), _record("full", np.clip(probs + 0.02, 0, 1), labels, seed=1),
               _record("frozen", probs, labels), _record("oracle", perfect, labels)]
    written, paragraph = statistics.write_statistics(records, tmp_path)
    assert [p.name for p in written] == ["statistics.md", "statistics.csv", "paired_comparisons.csv"]
    text = written[0].read_text()
    assert "better `oracle`" in text and "not distinguishable" in text
    assert "better `oracle`" in paragraph
    import pandas as pd

    table = pd.read_csv(written[1])
    full = table[(table["strategy"] == "full") & (table["metric"] == "macro_f1")].iloc[0]
    assert full["seeds"] == 2 and full["std"] >= 0 and full["ci_low"] <= full["mean"] <= full["ci_high"]
    assert statistics.write_statistics([{"run": {"status": "ok", "strategy": "x"}, "metrics": {}}], tmp_path) \
        == ([], "")
