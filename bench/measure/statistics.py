"""Which differences are real: bootstrap confidence intervals over test clips, and paired strategy comparisons.

Each run keeps every test clip's prediction (bench/measure/predictions.py). A bootstrap resample draws the test clips
with replacement (Efron & Tibshirani 1993, ch. 13: percentile interval); the metrics are recomputed on it, so no model
is trained again. Every run of one setting (dataset, backbone, frames, batch size) is evaluated on the same resamples,
which makes comparisons *paired*: for each resample the difference strategy - reference is taken on the same clips, so
what the clips have in common (easy and hard people) cancels out. A difference whose 95 % interval excludes 0 is marked
as one this test split can resolve. With several seeds, a resample's value is the mean over seeds, so the interval is
that of the seed mean over test-clip sampling; the seed spread is reported beside it.

A resample is a vector of clip counts ``w`` (B, N); every metric of bench/measure/metrics.py is a function of per-column
confusion counts, which for all resamples at once are ``w @ indicator`` (B, A). ``resampled_metrics`` computes the
paper-F1, macro-F1 and mA protocols that way (B = 2,000 resamples in milliseconds); a test checks it against
``metrics.evaluate`` on the same clips. Intervals are not corrected for multiple comparisons: among 13
comparisons with no true difference, about one in two sweeps shows a spurious one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.measure.metrics import MA_EPS, MACRO_THRESHOLD, PAPER_THRESHOLD, evaluate
from bench.measure.predictions import PredictionsError, decode
from bench.records import write_atomic
from data.schema import AttributeSchema, get_schema

METRICS = ("macro_f1", "paper_f1", "mA")
LABELS = {"macro_f1": "macro-F1", "paper_f1": "paper-F1", "mA": "mA"}
REFERENCES = ("full", "frozen")
RESAMPLES = 2000
LEVEL = 0.95
SEED = 0  # the same folder always gives the same intervals
SETTING = ("dataset", "backbone", "frames", "batch_size")


@dataclass(frozen=True)
class RunPredictions:
    strategy: str
    setting: tuple
    seed: int
    probs: np.ndarray   # (N, A)
    labels: np.ndarray  # (N, A)
    schema: AttributeSchema
    threshold: float


def load_predictions(records: list[dict]) -> list[RunPredictions]:
    """Successful runs that stored their test predictions (older results and profile-only runs have none)."""
    runs = []
    for record in records:
        stored = (record.get("metrics") or {}).get("test_predictions")
        if record["run"].get("status") != "ok" or not stored:
            continue
        cfg = record["run"]["config"]
        try:
            probs, labels = decode(stored)
        except PredictionsError:
            continue
        setting = (cfg["data"]["dataset"], cfg["model"]["backbone"], cfg["data"]["frames"], cfg["train"]["batch_size"])
        runs.append(RunPredictions(record["run"]["strategy"], setting, cfg["train"]["seed"], probs, labels,
                                   get_schema(cfg["data"]["dataset"]), cfg["train"].get("threshold", PAPER_THRESHOLD)))
    return runs


def resample_counts(n: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(B, n) counts: how often each clip is drawn in each resample (n draws with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _f1(tp, fp, fn) -> np.ndarray:
    return _div(2 * tp, 2 * tp + fp + fn)


def _counts(weights: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted TP, FP, FN, TN per column: (B, n) weights, (n, A) 0/1 -> four (B, A)."""
    pred, truth = pred.astype(np.float64), truth.astype(np.float64)
    return (weights @ (pred * truth), weights @ (pred * (1 - truth)), weights @ ((1 - pred) * truth),
            weights @ ((1 - pred) * (1 - truth)))


def _macro_group(weights: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """sklearn macro-F1 of one group per resample (B,): mean F1 over classes present in truth or prediction."""
    classes = np.union1d(truth, pred)
    hit = np.stack([(pred == c) & (truth == c) for c in classes], axis=1).astype(np.float64)  # (n, C)
    said = np.stack([pred == c for c in classes], axis=1).astype(np.float64)
    true = np.stack([truth == c for c in classes], axis=1).astype(np.float64)
    tp, predicted, actual = weights @ hit, weights @ said, weights @ true  # (B, C) each
    present = (predicted + actual) > 0
    f1 = _f1(tp, predicted - tp, actual - tp)
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def resampled_metrics(probs: np.ndarray, labels: np.ndarray, schema: AttributeSchema, weights: np.ndarray, *,
                      threshold: float = PAPER_THRESHOLD) -> dict[str, np.ndarray]:
    """paper-F1, macro-F1 and mA of every resample (B,), the protocols of ``metrics.evaluate``."""
    truth = np.asarray(labels).astype(np.int64)
    pred = (np.asarray(probs) > threshold).astype(np.int64)  # (n, A); strictly greater, as bench.measure.metrics
    tp, fp, fn, tn = _counts(weights, pred, truth)
    positives, negatives = tp + fn, fp + tn
    ma = (tp / (positives + MA_EPS) + tn / (negatives + MA_EPS)) / 2  # (B, A)
    paper, macro = [], []
    for group, cols in zip(schema.groups, schema.group_slices(), strict=True):
        paper.append(_f1(tp[:, cols].sum(1), fp[:, cols].sum(1), fn[:, cols].sum(1)))
        if group.binary:
            ids = truth[:, cols.start], (probs[:, cols.start] >= MACRO_THRESHOLD).astype(np.int64)
        else:
            ids = truth[:, cols].argmax(axis=1), probs[:, cols].argmax(axis=1)
        macro.append(_macro_group(weights, *ids))
    return {"paper_f1": np.mean(paper, axis=0), "macro_f1": np.mean(macro, axis=0), "mA": ma.mean(axis=1)}


PERMUTATIONS = 20


def permutation_chance(probs: np.ndarray, labels: np.ndarray, schema: AttributeSchema, *,
                       threshold: float = PAPER_THRESHOLD, permutations: int = PERMUTATIONS, seed: int = SEED) -> dict:
    """Metrics of the run's own predictions paired with the labels of other clips: mean (and ``<metric>_std``, the
    spread of the null distribution) over random permutations.

    This is the chance level of *this* model's output distribution: predictions that carry no information about
    the clip (misaligned labels, a constant or input-blind model) score it in expectation, whatever their class
    rates. It sits above the majority class for macro-F1, which rewards predicting minority classes at random.
    """
    rng = np.random.default_rng(seed)
    scores = [evaluate(probs[rng.permutation(len(probs))], labels, schema, threshold=threshold)
              for _ in range(permutations)]
    chance = {metric: float(np.mean([score[metric] for score in scores])) for metric in METRICS}
    chance.update({f"{metric}_std": float(np.std([score[metric] for score in scores], ddof=1)) for metric in METRICS})
    return chance


def record_chance(record: dict) -> dict | None:
    """``permutation_chance`` of a result record's stored test predictions (None where there are none)."""
    stored = (record.get("metrics") or {}).get("test_predictions")
    if not stored:
        return None
    cfg = record["run"]["config"]
    probs, labels = decode(stored)
    return permutation_chance(probs, labels, get_schema(cfg["data"]["dataset"]),
                              threshold=cfg["train"].get("threshold", PAPER_THRESHOLD))


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of a bootstrap distribution."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class SettingStats:
    """Per strategy of one setting: point values per seed (S,) and resampled seed means (B,) per metric."""

    setting: tuple
    points: dict  # strategy -> metric -> (S,) values of the seeds
    resampled: dict  # strategy -> metric -> (B,) resampled mean over seeds


def setting_stats(runs: list[RunPredictions], *, resamples: int = RESAMPLES, seed: int = SEED) -> list[SettingStats]:
    """Group runs by setting; all runs of a setting share test clips (checked) and resamples."""
    found = []
    for setting in sorted({r.setting for r in runs}, key=str):
        mine = [r for r in runs if r.setting == setting]
        reference = mine[0].labels
        if any(r.labels.shape != reference.shape or not np.array_equal(r.labels, reference) for r in mine):
            continue  # different test clips: nothing can be paired
        weights = resample_counts(reference.shape[0], resamples=resamples, seed=seed)
        points, resampled = {}, {}
        for strategy in _strategy_order({r.strategy for r in mine}):
            seeds = [r for r in mine if r.strategy == strategy]
            each = [resampled_metrics(r.probs, r.labels, r.schema, weights, threshold=r.threshold) for r in seeds]
            point = [evaluate(r.probs, r.labels, r.schema, threshold=r.threshold) for r in seeds]  # = recorded
            resampled[strategy] = {m: np.mean([e[m] for e in each], axis=0) for m in METRICS}
            points[strategy] = {m: np.array([p[m] for p in point]) for m in METRICS}
        found.append(SettingStats(setting, points, resampled))
    return found


def interval_rows(stats: SettingStats) -> list[dict]:
    rows = []
    for strategy, values in stats.points.items():
        for metric in METRICS:
            low, high = interval(stats.resampled[strategy][metric])
            spread = float(np.std(values[metric], ddof=1)) if len(values[metric]) > 1 else float("nan")
            rows.append({**dict(zip(SETTING, stats.setting, strict=True)), "strategy": strategy,
                         "seeds": len(values[metric]), "metric": metric, "mean": float(values[metric].mean()),
                         "std": spread, "ci_low": low, "ci_high": high})
    return rows


def paired_rows(stats: SettingStats, references=None) -> list[dict]:
    """strategy - reference for every pair (``references``: None = every strategy as a reference)."""
    rows = []
    names = list(stats.points)
    for reference in (references if references is not None else names):
        if reference not in stats.points:
            continue
        for strategy in names:
            if strategy == reference:
                continue
            for metric in METRICS:
                diff = stats.resampled[strategy][metric] - stats.resampled[reference][metric]
                low, high = interval(diff)
                point = float(stats.points[strategy][metric].mean() - stats.points[reference][metric].mean())
                rows.append({**dict(zip(SETTING, stats.setting, strict=True)), "strategy": strategy,
                             "reference": reference, "metric": metric, "difference": point, "ci_low": low,
                             "ci_high": high, "resolved": bool(low > 0 or high < 0)})
    return rows


def _strategy_order(names) -> list[str]:
    return [s for s in REFERENCES if s in names] + sorted(n for n in names if n not in REFERENCES)


# ---- report files -----------------------------------------------------------------------------------------------

def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _with_interval(row: dict) -> str:
    spread = f" ± {_pct(row['std'])}" if row["seeds"] > 1 else ""
    return f"{_pct(row['mean'])}{spread} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"


def _difference(row: dict) -> str:
    mark = " *" if row["resolved"] else ""
    return f"{100 * row['difference']:+.2f} [{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}]{mark}"


def _setting_title(setting: tuple) -> str:
    dataset, backbone, frames, batch = setting
    return f"dataset {dataset}, backbone {backbone}, {frames} frames, batch {batch}"


def _interval_table(rows: list[dict]) -> str:
    table = {}
    for row in rows:
        table.setdefault(row["strategy"], {"strategy": row["strategy"], "seeds": row["seeds"]})
        table[row["strategy"]][f"{LABELS[row['metric']]} (%)"] = _with_interval(row)
    return tabulate(list(table.values()), headers="keys", tablefmt="github", disable_numparse=True)


def _paired_table(rows: list[dict]) -> str:
    table = {}
    for row in rows:
        entry = table.setdefault(row["strategy"], {"strategy": row["strategy"]})
        entry[f"{LABELS[row['metric']]} vs {row['reference']}"] = _difference(row)
    return tabulate(list(table.values()), headers="keys", tablefmt="github", disable_numparse=True)


def _matrix(rows: list[dict], names: list[str]) -> str:
    """macro-F1 row - column, points; * = the paired interval excludes 0."""
    cells = {(r["strategy"], r["reference"]): r for r in rows if r["metric"] == "macro_f1"}
    lines = []
    for strategy in names:
        line = {"strategy": strategy}
        for reference in names:
            row = cells.get((strategy, reference))
            line[reference] = "" if row is None else f"{100 * row['difference']:+.1f}{'*' if row['resolved'] else ''}"
        lines.append(line)
    return tabulate(lines, headers="keys", tablefmt="github", disable_numparse=True)


def _names(rows: list[dict], reference: str, test) -> list[str]:
    return [r["strategy"] for r in rows if r["reference"] == reference and r["metric"] == "macro_f1" and test(r)]


def verdict_sentences(stats: SettingStats, pairs: list[dict], intervals: list[dict]) -> list[str]:
    """In words: which strategies differ from ``full`` and ``frozen`` on macro-F1, and how many pairs differ."""
    def listed(names: list[str]) -> str:
        return ", ".join(f"`{n}`" for n in names) if names else "none"

    sentences = []
    for reference in REFERENCES:
        if reference not in stats.points:
            continue
        better = _names(pairs, reference, lambda r: r["ci_low"] > 0)
        worse = _names(pairs, reference, lambda r: r["ci_high"] < 0)
        same = _names(pairs, reference, lambda r: not r["resolved"])
        sentences.append(f"Against `{reference}` (macro-F1, paired): better {listed(better)}; worse {listed(worse)}; "
                         f"not distinguishable {listed(same)}.")
    macro = [r for r in pairs if r["metric"] == "macro_f1" and r["strategy"] < r["reference"]]
    widths = [r["ci_high"] - r["ci_low"] for r in intervals if r["metric"] == "macro_f1"]
    if macro:
        resolved = sum(r["resolved"] for r in macro)
        sentences.append(f"Of all {len(macro)} strategy pairs, {resolved} differ on macro-F1 beyond the test "
                         f"split's sampling noise and {len(macro) - resolved} do not.")
    if widths:
        sentences.append(f"A single strategy's 95 % interval spans {100 * min(widths):.1f}-{100 * max(widths):.1f} "
                         "macro-F1 points: differences smaller than about half of that cannot be told apart on "
                         "this test split.")
    return sentences


METHOD = (f"Percentile bootstrap over test clips ({RESAMPLES} resamples, seed {SEED}, {int(100 * LEVEL)} % "
          "intervals); all runs of a setting share the resamples, so differences are paired (strategy - reference "
          "on the same resampled clips). Cells: value (%) [interval]; with several seeds, mean ± sample std over "
          "seeds [interval of the seed mean over clip resampling]. `*`: the interval of the difference excludes 0. "
          "No correction for multiple comparisons: with 13 comparisons per reference, about one spurious `*` in "
          "two sweeps is expected where no true difference exists.")


def write_statistics(records: list[dict], out: Path) -> tuple[list[Path], str]:
    """statistics.md, statistics.csv (intervals) and paired_comparisons.csv (every pair); returns the files and a
    short paragraph for summary.md ("" when no run stored its test predictions)."""
    all_stats = setting_stats(load_predictions(records))
    if not all_stats:
        return [], ""
    lines = ["# Statistics: confidence intervals and paired comparisons", "",
             "Generated by `python -m bench.reporting.report`: regenerate, do not edit.", "", METHOD, ""]
    intervals, pairs, paragraph = [], [], []
    for stats in all_stats:
        mine, paired = interval_rows(stats), paired_rows(stats)
        intervals += mine
        pairs += paired
        words = verdict_sentences(stats, paired, mine)
        paragraph += [f"{_setting_title(stats.setting)}: " + " ".join(words)]
        names = list(stats.points)
        lines += [f"## {_setting_title(stats.setting)}", "", *words, "", "### Intervals", "", _interval_table(mine),
                  "", "### Paired differences against `full` and `frozen` (points)", "",
                  _paired_table([r for r in paired if r["reference"] in REFERENCES]), "",
                  "### Every pair: macro-F1 of the row minus the column (points)", "", _matrix(paired, names), ""]
    out = Path(out)
    written = [out / "statistics.md", out / "statistics.csv", out / "paired_comparisons.csv"]
    write_atomic(written[0], lambda handle: handle.write("\n".join(lines)))
    write_atomic(written[1], lambda handle: pd.DataFrame(intervals).to_csv(handle, index=False, lineterminator="\n"))
    write_atomic(written[2], lambda handle: pd.DataFrame(pairs).to_csv(handle, index=False, lineterminator="\n"))
    text = ("\n## What this test split can tell apart\n\n" + "\n\n".join(paragraph)
            + "\n\nIntervals and every pair: `statistics.md`.\n")
    return written, text
