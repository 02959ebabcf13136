"""The three accuracy protocols on hand-computed cases, the majority baseline and input validation."""
import json

import numpy as np
import pytest

from bench.measure.metrics import MetricsInputError, evaluate, majority_probs, positive_rates
from data.schema import MARS, AttributeGroup, AttributeSchema


def _schema(multi_name: str = "colour") -> AttributeSchema:
    """Columns: hat | <multi_name> red, green, blue."""
    return AttributeSchema(name="tiny", groups=(
        AttributeGroup("hat", ("hat",), "a pedestrian {}", binary=True),
        AttributeGroup(multi_name, ("red", "green", "blue"), "a pedestrian in {}"),
    ))


# Columns: hat, red, green, blue.
LABELS = np.array([
    [1, 1, 0, 0],
    [0, 0, 1, 0],
    [1, 0, 0, 1],
    [0, 1, 0, 0],
    [0, 0, 1, 0],
])
PROBS = np.array([
    [0.90, 0.6, 0.2, 0.10],  # paper: hat, red          | macro: hat=1, red
    [0.47, 0.3, 0.5, 0.46],  # paper: hat, green, blue  | macro: hat=0, green
    [0.20, 0.1, 0.4, 0.30],  # paper: nothing           | macro: hat=0, green
    [0.45, 0.7, 0.5, 0.10],  # paper: red, green (hat at exactly 0.45 is not > 0.45) | macro: hat=0, red
    [0.10, 0.2, 0.3, 0.80],  # paper: blue              | macro: hat=0, blue
])


def test_paper_protocol_hand_computed():
    r = evaluate(PROBS, LABELS, _schema())
    hat, colour = r["per_group"]["hat"], r["per_group"]["colour"]
    # hat: pred [1,1,0,0,0] (prob > 0.45, strictly) vs truth [1,0,1,0,0] -> TP 1, FP 1, FN 1, TN 2
    assert hat["paper_acc"] == pytest.approx(3 / 5)
    assert hat["paper_precision"] == pytest.approx(1 / 2)
    assert hat["paper_recall"] == pytest.approx(1 / 2)
    assert hat["paper_f1"] == pytest.approx(1 / 2)  # 2*1 / (2*1 + 1 + 1)
    # colour, summed over the 3 columns: s0 TP1 TN2 | s1 TP1 FP1 TN1 | s2 FN1 TN2 | s3 TP1 FP1 TN1 | s4 FP1 FN1 TN1
    # -> TP 3, FP 3, FN 2, TN 7 (15 cells)
    assert colour["paper_acc"] == pytest.approx(10 / 15)
    assert colour["paper_precision"] == pytest.approx(3 / 6)
    assert colour["paper_recall"] == pytest.approx(3 / 5)
    assert colour["paper_f1"] == pytest.approx(6 / 11)  # 2*3 / (6 + 3 + 2)
    # unweighted mean over the two groups
    assert r["paper_acc"] == pytest.approx((3 / 5 + 2 / 3) / 2)
    assert r["paper_precision"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert r["paper_recall"] == pytest.approx((1 / 2 + 3 / 5) / 2)
    assert r["paper_f1"] == pytest.approx(23 / 44)  # (1/2 + 6/11) / 2
    assert r["num_samples"] == 5


def test_paper_threshold_is_a_parameter():
    # At 0.5, hat predictions become [1,0,0,0,0]: TP 1, FP 0, FN 1 -> F1 2/3.
    r = evaluate(PROBS, LABELS, _schema(), threshold=0.5)
    assert r["per_group"]["hat"]["paper_f1"] == pytest.approx(2 / 3)


def test_macro_protocol_hand_computed():
    r = evaluate(PROBS, LABELS, _schema())
    hat, colour = r["per_group"]["hat"], r["per_group"]["colour"]
    # hat at 0.5: pred [1,0,0,0,0] vs truth [1,0,1,0,0]: 4/5 correct.
    # class 1: TP 1, FP 0, FN 1 -> 2/3; class 0: TP 3, FP 1, FN 0 -> 6/7; macro = 16/21
    assert hat["macro_acc"] == pytest.approx(4 / 5)
    assert hat["macro_f1"] == pytest.approx(16 / 21)
    # colour argmax: truth [r,g,b,r,g], pred [r,g,g,r,b]: 3/5 correct.
    # red: TP 2 -> 1; green: TP 1, FP 1, FN 1 -> 1/2; blue: TP 0 -> 0; macro = 1/2
    assert colour["macro_acc"] == pytest.approx(3 / 5)
    assert colour["macro_f1"] == pytest.approx(1 / 2)
    assert r["macro_acc"] == pytest.approx(0.7)
    assert r["macro_f1"] == pytest.approx(53 / 84)  # (16/21 + 1/2) / 2
    # no pose/motion group: the identity means are the plain means
    assert r["macro_f1_identity"] == pytest.approx(r["macro_f1"])
    assert r["macro_acc_identity"] == pytest.approx(r["macro_acc"])


def test_macro_identity_excludes_pose():
    r = evaluate(PROBS, LABELS, _schema("pose"))
    assert r["macro_f1"] == pytest.approx(53 / 84)
    assert r["macro_f1_identity"] == pytest.approx(16 / 21)  # hat only
    assert r["macro_acc_identity"] == pytest.approx(4 / 5)


def test_macro_f1_averages_over_classes_present_only():
    # truth [r, r, g], pred [r, g, g]; blue appears nowhere and is left out (as sklearn does).
    # red: TP 1, FN 1 -> 2/3; green: TP 1, FP 1 -> 2/3; macro = 2/3 (not 4/9)
    labels = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]])
    probs = np.array([[0.9, 0.8, 0.1, 0.1], [0.1, 0.2, 0.7, 0.1], [0.9, 0.1, 0.6, 0.3]])
    r = evaluate(probs, labels, _schema())
    assert r["per_group"]["colour"]["macro_f1"] == pytest.approx(2 / 3)
    assert r["per_group"]["hat"]["macro_f1"] == pytest.approx(1.0)


def test_mean_accuracy_and_per_column_hand_computed():
    r = evaluate(PROBS, LABELS, _schema())
    col = r["per_column"]
    # hat: TPR 1/2, TNR 2/3 -> 7/12 | red: 1 | green: TPR 1/2, TNR 2/3 -> 7/12 | blue: TPR 0, TNR 2/4 -> 1/4
    expected_ma = {"hat": 7 / 12, "colour red": 1.0, "colour green": 7 / 12, "colour blue": 1 / 4}
    for name, value in expected_ma.items():
        assert col[name]["mA"] == pytest.approx(value)
    assert r["mA"] == pytest.approx(29 / 48)  # (7 + 12 + 7 + 3) / 48
    assert r["per_group"]["colour"]["mA"] == pytest.approx((1 + 7 / 12 + 1 / 4) / 3)
    # per-column precision / recall / F1 at 0.45; blue: TP 0, FP 2, FN 1
    assert (col["hat"]["precision"], col["hat"]["recall"], col["hat"]["f1"]) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert (col["colour green"]["precision"], col["colour green"]["f1"]) == pytest.approx((1 / 2, 1 / 2))
    assert (col["colour blue"]["precision"], col["colour blue"]["f1"]) == (0.0, 0.0)


def test_mean_accuracy_column_without_positives_gets_zero_tpr():
    # No sample wears a hat and none is predicted to: TPR = 0 / (0 + eps) = 0, TNR = 1 -> 0.5, not 1.
    labels = np.array([[0, 1, 0, 0], [0, 0, 1, 0]])
    probs = np.array([[0.1, 0.9, 0.1, 0.1], [0.1, 0.1, 0.9, 0.1]])
    r = evaluate(probs, labels, _schema())
    assert r["per_column"]["hat"]["mA"] == pytest.approx(0.5)
    assert r["per_column"]["hat"]["f1"] == 0.0  # undefined -> 0


def test_perfect_predictions_score_one_everywhere():
    probs = LABELS.astype(float) * 0.9 + 0.05  # 0.95 for positives, 0.05 for negatives
    schema = _schema("pose")
    r = evaluate(probs, LABELS, schema)
    scores = [v for k, v in r.items() if k not in ("per_group", "per_column", "num_samples")]
    scores += [v for g in r["per_group"].values() for v in g.values()]
    scores += [v for c in r["per_column"].values() for v in c.values()]
    kinds = len({g.kind for g in schema.groups})  # one macro_f1_<kind> per kind the schema has
    assert len(scores) == 9 + kinds + 2 * 7 + 4 * 4
    assert scores == pytest.approx([1.0] * len(scores))


def test_result_is_json_serialisable_with_plain_types():
    r = json.loads(json.dumps(evaluate(PROBS, LABELS, _schema())))
    assert set(r["per_group"]) == {"hat", "colour"}
    assert list(r["per_column"]) == ["hat", "colour red", "colour green", "colour blue"]
    assert isinstance(r["paper_f1"], float) and isinstance(r["num_samples"], int)


def test_majority_baseline_picks_majority_classes():
    train = np.array([
        [1, 0, 0, 1],
        [1, 0, 1, 0],
        [0, 0, 0, 1],
        [1, 1, 0, 0],
    ])  # hat rate 3/4 -> 1; blue is the most frequent colour (2 of 4)
    probs = majority_probs(train, 3, _schema())
    assert probs.shape == (3, 4)
    np.testing.assert_array_equal(probs, np.tile([1.0, 0.0, 0.0, 1.0], (3, 1)))
    # hat rate exactly 1/2 is not a majority -> 0
    assert majority_probs(train[1:3], 1, _schema())[0, 0] == 0.0


def test_majority_baseline_evaluates_on_test_split():
    train = np.array([[0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 0, 0]])  # always "no hat, green"
    r = evaluate(majority_probs(train, len(LABELS), _schema()), LABELS, _schema())
    # hat: all 0 vs [1,0,1,0,0] -> acc 3/5; green: truth s1, s4 -> acc 2/5
    assert r["per_group"]["hat"]["macro_acc"] == pytest.approx(3 / 5)
    assert r["per_group"]["colour"]["macro_acc"] == pytest.approx(2 / 5)
    assert r["per_group"]["hat"]["paper_f1"] == 0.0


def test_positive_rates():
    np.testing.assert_allclose(positive_rates(LABELS), [2 / 5, 2 / 5, 2 / 5, 1 / 5])


def test_mars_schema_shapes():
    rng = np.random.default_rng(0)
    labels = majority_probs(np.eye(MARS.num_columns), 8, MARS)  # any valid 0/1 matrix
    r = evaluate(rng.random((8, MARS.num_columns)), labels, MARS)
    assert len(r["per_group"]) == 14 and len(r["per_column"]) == 43


@pytest.mark.parametrize("probs, labels, match", [
    (PROBS[:, :3], LABELS, "probs has shape"),
    (PROBS, LABELS[:, :3], "labels has shape"),
    (PROBS[:4], LABELS, "same non-zero number"),
    (PROBS[:0], LABELS[:0], "same non-zero number"),
    (PROBS * 2, LABELS, r"in \[0, 1\]"),
    (np.where(PROBS > 0.8, np.nan, PROBS), LABELS, "finite"),
    (PROBS, LABELS * 2, "only 0 and 1"),
])
def test_input_validation(probs, labels, match):
    with pytest.raises(MetricsInputError, match=match):
        evaluate(probs, labels, _schema())


def test_validation_of_threshold_and_baseline_inputs():
    with pytest.raises(MetricsInputError, match="threshold"):
        evaluate(PROBS, LABELS, _schema(), threshold=1.0)
    with pytest.raises(MetricsInputError, match="train_labels has shape"):
        majority_probs(LABELS[:, :2], 3, _schema())
    with pytest.raises(ValueError, match="n must be"):
        majority_probs(LABELS, -1, _schema())
