"""Test against train: the metrics of a fixed subset of the training clips, evaluated exactly as the test split is,
and the clip-sampling noise that tells a real difference from chance.

A trained model scores at least about as well on clips it was trained on as on clips it never saw. A test macro-F1
clearly above the training subset's says the test clips were not unseen (test data leaking into training) or the
split scored as test is another one (evaluation on the wrong split); the gate's train-vs-test check
(bench/reporting/gate.py) fails such a run. Every run evaluates, after training, with the weights the validation
split chose, in eval mode and with the evaluation's frame sampling (segment centres, no augmentation), the first
``subset_clips(len(train), len(test))`` training clips: as many as the test split has, at most ``MAX_CLIPS``, and
fixed (the same clips in every run and seed, so runs compare); bench/training/datasets.py builds the view. On the
embedded default that is 256 of 768 clips. The cap is measured (``frozen``, seed 0, default preset, this project's
2-core CPU; ``profile.train_subset_eval_time_s`` against ``run.duration_s``): the test split's 512 clips added 9.7 %
to the run's time, 256 add 3.9 %; the bound of the gap stays small at 256 clips (0.032 macro-F1, k_std bootstrap
standard deviations, while that run's test scored 0.026 below its training clips), far below what training on the
test clips does (+0.156 for ``full`` in a 10-epoch smoke run trained and validated on its test clips, against a
bound of 0.099 on its 32 clips).

Noise: macro-F1 of n clips varies with which n clips were drawn. Its standard deviation is estimated by the bootstrap
over clips (bench/measure/statistics.py ``resampled_metrics``: the same protocol as ``metrics.evaluate``, recomputed
on resampled clip counts), once for the training subset when the run measures it (stored with its metrics), and for
the test split from the run's stored test predictions. The two sets of clips are disjoint and resampled
independently, so the standard deviation of the difference is the root of the sum of their variances.
"""
from __future__ import annotations

import math

import numpy as np

from bench.measure.metrics import PAPER_THRESHOLD, evaluate
from bench.measure.predictions import PredictionsError, decode
from bench.measure.statistics import resample_counts, resampled_metrics
from data.schema import AttributeSchema, get_schema

TRAIN_SUBSET = "train_subset"  # metrics.<this>: the training subset's figures
BOOTSTRAP_RESAMPLES = 1000  # std of macro-F1 to about 2 % (relative standard error 1 / sqrt(2 (B - 1)))
BOOTSTRAP_SEED = 0  # the same predictions always give the same noise
MAX_CLIPS = 256


def subset_clips(train: int, test: int) -> int:
    """How many training clips (the first ones) are evaluated: as many as the test split, at most ``MAX_CLIPS``."""
    return min(train, test, MAX_CLIPS)


def macro_f1_bootstrap_std(probs: np.ndarray, labels: np.ndarray, schema: AttributeSchema, *,
                           threshold: float = PAPER_THRESHOLD) -> float:
    """Standard deviation (ddof = 1) of macro-F1 over ``BOOTSTRAP_RESAMPLES`` clip resamples of (N, A) predictions."""
    weights = resample_counts(len(probs), resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)  # (B, N)
    scores = resampled_metrics(np.asarray(probs), np.asarray(labels), schema, weights, threshold=threshold)
    return float(np.std(scores["macro_f1"], ddof=1))


def subset_metrics(probs: np.ndarray, labels: np.ndarray, schema: AttributeSchema, *,
                   threshold: float = PAPER_THRESHOLD) -> dict:
    """``metrics.train_subset``: every scalar of ``metrics.evaluate`` (the protocols, the per-kind macro-F1,
    ``num_samples``; the per-group and per-column tables are left out, the comparison needs none) and
    ``macro_f1_bootstrap_std``."""
    scores = evaluate(probs, labels, schema, threshold=threshold)
    kept = {key: value for key, value in scores.items() if not isinstance(value, dict)}
    kept["macro_f1_bootstrap_std"] = macro_f1_bootstrap_std(probs, labels, schema, threshold=threshold)
    return kept


def _test_std(record: dict, subset: dict) -> float | None:
    """Bootstrap std of the test macro-F1 from the stored test predictions; without them, the training subset's
    scaled to the test split's size (the variance of a mean over n clips goes as 1 / n)."""
    cfg = record["run"]["config"]
    stored = (record.get("metrics") or {}).get("test_predictions")
    if stored:
        try:
            probs, labels = decode(stored)
            return macro_f1_bootstrap_std(probs, labels, get_schema(cfg["data"]["dataset"]),
                                          threshold=cfg["train"].get("threshold", PAPER_THRESHOLD))
        except PredictionsError:
            pass
    test_n, train_n, train_std = (record["metrics"].get("test") or {}).get("num_samples"), \
        subset.get("num_samples"), subset.get("macro_f1_bootstrap_std")
    if not (test_n and train_n and train_std is not None):
        return None
    return train_std * math.sqrt(train_n / test_n)


def record_gap(record: dict) -> dict | None:
    """Test macro-F1 minus the training subset's (``gap``, > 0: test beats train) and the bootstrap std of that
    difference (``gap_std``; None where a std is unknown); None for a record without both figures (older than
    schema version 3, or profile-only)."""
    found = record.get("metrics") or {}
    subset, test = found.get(TRAIN_SUBSET) or {}, found.get("test") or {}
    if subset.get("macro_f1") is None or test.get("macro_f1") is None:
        return None
    train_std, test_std = subset.get("macro_f1_bootstrap_std"), _test_std(record, subset)
    gap_std = math.hypot(train_std, test_std) if train_std is not None and test_std is not None else None
    return {"gap": test["macro_f1"] - subset["macro_f1"], "gap_std": gap_std}
