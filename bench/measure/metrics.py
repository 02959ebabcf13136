"""Accuracy protocols of video pedestrian attribute recognition, and a majority-class baseline.

Three protocols are in use and they give different numbers for the same predictions, so every run reports all
three (inputs: ``probs`` (N, A) sigmoid probabilities, ``labels`` (N, A) 0/1, columns laid out by the schema):

* ``paper`` -- the default of the released VTFPAR++ code (Wang et al. 2024): binarise with ``prob > threshold``
  (0.45, strictly greater, as that code tests), then per group sum TP/FP/FN/TN over the group's one-hot columns
  (micro over binarised classes), take accuracy, precision, recall and F1 per group and an unweighted mean over
  groups. This inflates multi-class groups -- every sample adds (classes - 1) true negatives to a correct guess --
  but it is what VTFPAR++'s tables most likely used, so it is the headline figure. VTF's released code (Zhu et al.,
  CVPR-W 2023) scores multi-class groups by per-sample F1 instead, a protocol not implemented here: a ``paper``
  figure from this harness is comparable with VTFPAR++'s, not with VTF's 81.94 (Table 2).
* ``macro`` -- Chen et al., "Temporal attention aware learning for video-based pedestrian attribute
  recognition" (PRCV 2019): a group is one classification problem. Binary groups threshold the probability at
  0.5; multi-class groups take the argmax of their scores (truth = argmax of the one-hot labels). Per group:
  accuracy and sklearn-style macro-F1 (``average='macro'``: mean over the classes present in truth or
  prediction; binary groups are two-class problems over {0, 1}). Also reported without the ``pose`` and
  ``motion`` groups, the "identity-related" attributes of that paper.
* ``mA`` -- label-based mean accuracy of image PAR (Li et al., PETA/RAP): per column (TPR + TNR) / 2 at the same
  ``threshold`` as ``paper``, mean over columns.
"""
from __future__ import annotations

import numpy as np

from bench.errors import BenchError
from data.schema import KINDS, AttributeGroup, AttributeSchema

PAPER_THRESHOLD = 0.45
MACRO_THRESHOLD = 0.5
MA_EPS = 1e-20  # TPR = TP / (P + eps): a column without positives gets TPR 0 (its mA is at most 0.5)
NON_IDENTITY_GROUPS = frozenset({"pose", "motion"})
# The scalar figures ``evaluate`` returns, named once: the checkpoint-selection choices (``train.select_metric``),
# the gate and the reports read these names; a test checks that ``evaluate`` returns exactly these.
PROTOCOL_METRICS = ("paper_f1", "paper_acc", "paper_precision", "paper_recall", "macro_f1", "macro_acc")
SCALAR_METRICS = (*PROTOCOL_METRICS, "macro_f1_identity", "macro_acc_identity", "mA",
                  *(f"macro_f1_{kind}" for kind in KINDS))  # a kind's figure only where the schema has that kind


class MetricsInputError(BenchError, ValueError):
    """Raised when predictions or labels do not fit the schema."""


def _as_matrix(x, name: str, schema: AttributeSchema) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != schema.num_columns:
        raise MetricsInputError(f"metrics: {name} has shape {arr.shape}, expected (N, {schema.num_columns}) "
                                f"for schema {schema.name!r}")
    return arr


def _check_inputs(probs, labels, schema: AttributeSchema, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = _as_matrix(probs, "probs", schema), _as_matrix(labels, "labels", schema)
    if probs.shape[0] != labels.shape[0] or probs.shape[0] == 0:
        raise MetricsInputError(f"metrics: probs has {probs.shape[0]} rows and labels {labels.shape[0]}, "
                                "expected the same non-zero number")
    if not np.all(np.isfinite(probs)) or probs.min() < 0.0 or probs.max() > 1.0:
        raise MetricsInputError("metrics: probs must be finite probabilities in [0, 1] (apply sigmoid to logits)")
    if not np.all((labels == 0) | (labels == 1)):
        raise MetricsInputError("metrics: labels must contain only 0 and 1")
    if not 0.0 < threshold < 1.0:
        raise MetricsInputError(f"metrics: threshold must lie in (0, 1), got {threshold}")
    return probs, labels.astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column TP, FP, FN, TN of 0/1 matrices (N, A) -> four (A,) count vectors."""
    tp = np.sum((pred == 1) & (truth == 1), axis=0)
    fp = np.sum((pred == 1) & (truth == 0), axis=0)
    fn = np.sum((pred == 0) & (truth == 1), axis=0)
    tn = np.sum((pred == 0) & (truth == 0), axis=0)
    return tp, fp, fn, tn


def _prf(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1; each 0 where undefined. F1 = 2TP / (2TP + FP + FN) equals 2PR / (P + R)."""
    return _safe_div(tp, tp + fp), _safe_div(tp, tp + fn), _safe_div(2 * tp, 2 * tp + fp + fn)


def _paper_group(pred_g: np.ndarray, truth_g: np.ndarray) -> dict[str, float]:
    """VTFPAR++ per-group figures: counts summed over the group's columns (N, width) before the ratios."""
    tp, fp, fn, tn = (c.sum() for c in _confusion(pred_g, truth_g))
    precision, recall, f1 = _prf(tp, fp, fn)
    return {"paper_f1": float(f1), "paper_acc": float((tp + tn) / (tp + fp + fn + tn)),
            "paper_precision": float(precision), "paper_recall": float(recall)}


def _class_ids(probs_g: np.ndarray, truth_g: np.ndarray, group: AttributeGroup) -> tuple[np.ndarray, np.ndarray]:
    """The group as one classification problem: (truth, pred) class ids, each (N,)."""
    if group.binary:
        return truth_g[:, 0], (probs_g[:, 0] >= MACRO_THRESHOLD).astype(np.int64)
    return truth_g.argmax(axis=1), probs_g.argmax(axis=1)


def _macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """sklearn ``f1_score(average='macro')``: mean F1 over the classes present in truth or prediction."""
    classes = np.union1d(truth, pred)
    tp = np.array([np.sum((pred == c) & (truth == c)) for c in classes])
    fp = np.array([np.sum((pred == c) & (truth != c)) for c in classes])
    fn = np.array([np.sum((pred != c) & (truth == c)) for c in classes])
    return float(_prf(tp, fp, fn)[2].mean())


def _macro_group(probs_g: np.ndarray, truth_g: np.ndarray, group: AttributeGroup) -> dict[str, float]:
    truth, pred = _class_ids(probs_g, truth_g, group)
    return {"macro_f1": _macro_f1(truth, pred), "macro_acc": float(np.mean(truth == pred))}


def _column_ma(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-column (TPR + TNR) / 2 of 0/1 matrices (N, A) -> (A,)."""
    tp, _, _, tn = _confusion(pred, truth)
    positives = truth.sum(axis=0)
    negatives = truth.shape[0] - positives
    return (tp / (positives + MA_EPS) + tn / (negatives + MA_EPS)) / 2


def _per_column(pred: np.ndarray, truth: np.ndarray, schema: AttributeSchema) -> dict[str, dict[str, float]]:
    """Per-attribute precision / recall / F1 at the paper threshold and mA (the layout of VTF Table 2)."""
    precision, recall, f1 = _prf(*_confusion(pred, truth)[:3])
    ma = _column_ma(pred, truth)
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "mA": float(ma[i])} for i, name in enumerate(schema.column_names())}


def _mean(values: list[float]) -> float:
    """Unweighted mean; NaN for an empty list (a schema made only of pose/motion has no identity groups)."""
    return float(np.mean(values)) if values else float("nan")


def evaluate(probs: np.ndarray, labels: np.ndarray, schema: AttributeSchema, *,
             threshold: float = PAPER_THRESHOLD) -> dict:
    """All three protocols on one split; returns a JSON-serialisable dict of plain floats.

    Top level: ``paper_{f1,acc,precision,recall}``, ``macro_{f1,acc}``, ``macro_{f1,acc}_identity``, ``mA``,
    ``macro_f1_<kind>`` (the mean macro-F1 of the groups of each kind of ``data.schema.KINDS``), ``num_samples``;
    ``per_group[name]`` holds the paper and macro figures plus the mean mA of the group's
    columns; ``per_column[name]`` holds precision / recall / F1 at ``threshold`` and the column's mA.
    """
    probs, truth = _check_inputs(probs, labels, schema, threshold)
    pred = (probs > threshold).astype(np.int64)  # (N, A); strictly greater, as the released VTFPAR++ code
    ma = _column_ma(pred, truth)  # (A,)
    per_group = {}
    for group, cols in zip(schema.groups, schema.group_slices(), strict=True):
        per_group[group.name] = {**_paper_group(pred[:, cols], truth[:, cols]),
                                 **_macro_group(probs[:, cols], truth[:, cols], group),
                                 "mA": float(ma[cols].mean())}
    result = {key: _mean([g[key] for g in per_group.values()]) for key in PROTOCOL_METRICS}
    identity = [g for name, g in per_group.items() if name not in NON_IDENTITY_GROUPS]
    result["macro_f1_identity"] = _mean([g["macro_f1"] for g in identity])
    result["macro_acc_identity"] = _mean([g["macro_acc"] for g in identity])
    result["mA"] = float(ma.mean())
    for kind in KINDS:  # "F1 per kind": what the evidence needs (data/schema.py); absent for a kind with no group
        if schema.groups_of_kind(kind):
            result[f"macro_f1_{kind}"] = _mean([per_group[g]["macro_f1"] for g in schema.groups_of_kind(kind)])
    result["num_samples"] = int(probs.shape[0])
    result["per_group"] = per_group
    result["per_column"] = _per_column(pred, truth, schema)
    return result


def positive_rates(train_labels: np.ndarray) -> np.ndarray:
    """Fraction of positives per column (A,): the prior of the weighted BCE loss (Jia et al. 2020, used by VTF)."""
    labels = np.asarray(train_labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise MetricsInputError(f"metrics: train_labels has shape {labels.shape}, expected (N, A) with N > 0")
    return labels.mean(axis=0)


def majority_probs(train_labels: np.ndarray, n: int, schema: AttributeSchema) -> np.ndarray:
    """Scores (n, A) of a predictor that always answers the training majority (the floor any model must beat).

    Binary groups: 1.0 where the training positive rate exceeds 0.5, else 0.0. Multi-class groups: one-hot of the
    most frequent training class (ties: the first class in schema order).
    """
    rates = positive_rates(_as_matrix(train_labels, "train_labels", schema))  # (A,)
    if n < 0:
        raise MetricsInputError(f"metrics: n must be >= 0, got {n}")
    row = np.zeros(schema.num_columns)
    for group, cols in zip(schema.groups, schema.group_slices(), strict=True):
        if group.binary:
            row[cols] = float(rates[cols][0] > 0.5)
        else:
            row[cols.start + int(np.argmax(rates[cols]))] = 1.0
    return np.tile(row, (n, 1))  # (n, A)
