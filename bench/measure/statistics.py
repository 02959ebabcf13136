"""Which differences are real: two-stage bootstrap intervals over training seeds and test clips, and paired strategy
comparisons with a Holm-Bonferroni correction for the number of pairs.

Each run keeps every test clip's prediction (bench/measure/predictions.py), so the metrics of a resample are
recomputed without training anything again. A score varies with two crossed sources of noise: the training seed
(initialisation, data order) and the test clips. A resample therefore draws the setting's seeds with replacement and
then the test clips with replacement, and takes the metric's mean over the drawn seeds on the drawn clips; the
percentile interval of those values is reported (Efron & Tibshirani 1993, ch. 13). Seeds and clips are crossed (every
seed is scored on the same clips), so one clip resample serves all drawn seeds: this is the pigeonhole bootstrap of a
crossed design (Owen 2007, Ann. Appl. Stat. 1(2)), mildly conservative; a nested two-stage bootstrap (Davison &
Hinkley 1997, sec. 3.8) would draw clips per seed. With one seed the seed stage draws that seed every time and the
interval covers test-clip sampling only: the words of the report say so.

Comparisons are *paired*: every strategy of a setting (``bench.records.SETTING``: dataset, backbone, frames, batch
size, ranks, precision, switches) is scored on the same
clip resamples, and two strategies on the same seed draw over the seeds both have, so what clips and seeds have in
common cancels out. Each unordered pair gets a two-sided bootstrap p-value (``bootstrap_p``); the pairs of one metric
in one setting are one family, adjusted by Holm's step-down method (Holm 1979, Scand. J. Statist. 6:65-70), which
controls the family-wise error rate at ``ALPHA`` under any dependence between the comparisons. A verdict "better" or
"worse" needs the adjusted p below ``ALPHA``; otherwise "no detectable difference".

A clip resample is a vector of clip counts ``w`` (B, N); every metric of bench/measure/metrics.py is a function of
per-column confusion counts, which for all resamples at once are ``w @ indicator`` (B, A). ``resampled_metrics``
computes the paper-F1, macro-F1 and mA protocols that way; a test checks it against ``metrics.evaluate`` on the same
clips. The seed stage is a count matrix too: (B, S) counts over the seeds, weighting each seed's (B,) resampled values.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.measure.metrics import MA_EPS, MACRO_THRESHOLD, PAPER_THRESHOLD, evaluate
from bench.measure.predictions import PredictionsError, decode
from bench.records import SETTING, dig, write_atomic
from bench.records import row as record_row
from data.schema import AttributeSchema, get_schema

METRICS = ("macro_f1", "paper_f1", "mA")
LABELS = {"macro_f1": "macro-F1", "paper_f1": "paper-F1", "mA": "mA"}
REFERENCES = ("full", "frozen")
# The smallest two-sided p is 2 / (RESAMPLES + 1) = 0.0002: Holm can then resolve a family of up to 250 pairs
# (16 strategies: 120), where 2,000 resamples could resolve none of 120.
RESAMPLES = 10_000
CHUNK = 1000  # clip resamples per count matrix: (CHUNK, N) float64 is 96 MB at N = 12,000 clips
LEVEL = 0.95
ALPHA = 1 - LEVEL  # family-wise error rate of the verdicts
SEED = 0  # clip stage: the same folder always gives the same intervals
SEED_STAGE = 1  # seed stage, a stream apart from the clips'
CORRECTION = "Holm-Bonferroni"
NO_DIFFERENCE = "no detectable difference"


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
        flat, stored = record_row(record), dig(record, "metrics", "test_predictions")
        if flat["status"] != "ok" or not stored:
            continue
        try:
            probs, labels = decode(stored)
        except PredictionsError:
            continue
        setting = tuple(flat[key] for key in SETTING)  # bench/records.py setting_of, as every table groups runs
        runs.append(RunPredictions(flat["strategy"], setting, flat["seed"], probs, labels,
                                   get_schema(flat["dataset"]), _threshold(flat)))
    return runs


def _threshold(flat: dict) -> float:
    """The run's decision threshold (``records.row``); records made before the field used the paper's."""
    return PAPER_THRESHOLD if flat["threshold"] is None else flat["threshold"]


def resample_chunks(n: int, *, resamples: int = RESAMPLES, seed: int = SEED):
    """(CHUNK, n) counts at a time: how often each clip is drawn in each resample (n draws with replacement). The
    chunks are the rows of one draw of (resamples, n), in order, so memory stays bounded on large test splits."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=min(CHUNK, resamples - start)).astype(np.float64)


def resample_counts(n: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(B, n) counts: how often each clip is drawn in each resample (n draws with replacement)."""
    return np.concatenate(list(resample_chunks(n, resamples=resamples, seed=seed)))


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _f1(tp, fp, fn) -> np.ndarray:
    return _div(2 * tp, 2 * tp + fp + fn)


def _class_indicators(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(n, 3C) hit / predicted / actual 0/1 of one group's classes present in truth or prediction (sklearn's)."""
    classes = np.union1d(truth, pred)
    said, true = pred[:, None] == classes, truth[:, None] == classes  # (n, C) each
    return np.concatenate([said & true, said, true], axis=1)


def _indicators(probs: np.ndarray, labels: np.ndarray, schema: AttributeSchema,
                threshold: float) -> tuple[np.ndarray, list[int]]:
    """(n, K) 0/1 columns whose weighted sums are every count the three protocols need -- TP, FP, FN, TN per column
    (4 blocks of A), then each group's class indicators (3C) -- and the block widths: one matmul per resample chunk."""
    truth = np.asarray(labels).astype(np.int64)
    pred = (np.asarray(probs) > threshold).astype(np.int64)  # (n, A); strictly greater, as bench.measure.metrics
    blocks = [pred * truth, pred * (1 - truth), (1 - pred) * truth, (1 - pred) * (1 - truth)]
    for group, cols in zip(schema.groups, schema.group_slices(), strict=True):
        if group.binary:
            ids = truth[:, cols.start], (probs[:, cols.start] >= MACRO_THRESHOLD).astype(np.int64)
        else:
            ids = truth[:, cols].argmax(axis=1), probs[:, cols].argmax(axis=1)
        blocks.append(_class_indicators(*ids))
    return np.concatenate(blocks, axis=1).astype(np.float32), [b.shape[1] for b in blocks]


def _macro_group(counts: np.ndarray) -> np.ndarray:
    """sklearn macro-F1 of one group per resample (B,) from its (B, 3C) counts: mean F1 over the classes present."""
    tp, predicted, actual = np.split(counts, 3, axis=1)  # (B, C) each
    present = (predicted + actual) > 0
    f1 = _f1(tp, predicted - tp, actual - tp)
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def resampled_metrics(probs: np.ndarray, labels: np.ndarray, schema: AttributeSchema, weights: np.ndarray, *,
                      threshold: float = PAPER_THRESHOLD) -> dict[str, np.ndarray]:
    """paper-F1, macro-F1 and mA of every resample (B,), the protocols of ``metrics.evaluate``. ``weights``: (B, n)
    clip counts; float32 sums them exactly (integers below 2**24) at twice float64's speed."""
    indicators, widths = _indicators(probs, labels, schema, threshold)
    counts = (weights.astype(np.float32) @ indicators).astype(np.float64)  # (B, K)
    blocks = np.split(counts, np.cumsum(widths)[:-1], axis=1)
    tp, fp, fn, tn = blocks[:4]  # (B, A) each
    ma = (tp / (tp + fn + MA_EPS) + tn / (fp + tn + MA_EPS)) / 2  # (B, A)
    paper = [_f1(tp[:, cols].sum(1), fp[:, cols].sum(1), fn[:, cols].sum(1)) for cols in schema.group_slices()]
    macro = [_macro_group(counts) for counts in blocks[4:]]
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
    stored = dig(record, "metrics", "test_predictions")
    if not stored:
        return None
    flat = record_row(record)
    probs, labels = decode(stored)
    return permutation_chance(probs, labels, get_schema(flat["dataset"]), threshold=_threshold(flat))


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of a bootstrap distribution."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_p(diff: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from the (B,) resampled differences: twice the smaller share of them at
    or beyond 0, each count +1 (Davison & Hinkley 1997, eq. 4.11), at most 1. Inverts the percentile interval: p < a
    about where the (1 - a) interval excludes 0; identical predictions (every difference 0) give 1."""
    tail = min(np.count_nonzero(diff <= 0), np.count_nonzero(diff >= 0))
    return float(min(1.0, 2 * (tail + 1) / (diff.size + 1)))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): the k-th smallest of m is multiplied by m - k + 1, then made
    non-decreasing in that order and capped at 1. Rejecting where adjusted p < a keeps the family-wise error rate at
    a for any dependence between the tests (same as statsmodels' ``multipletests(method="holm")``)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


@functools.lru_cache(maxsize=16)
def seed_counts(seeds: int, *, resamples: int = RESAMPLES) -> np.ndarray:
    """(B, S) seed-stage counts, read-only: S seeds drawn with replacement per resample, the same draw for every
    strategy and pair with S seeds (pairing by seed position). One seed: all ones, clips only."""
    counts = resample_counts(seeds, resamples=resamples, seed=SEED_STAGE)
    counts.flags.writeable = False
    return counts


def two_stage(per_seed: np.ndarray) -> np.ndarray:
    """(S, B) values of each seed on the shared clip resamples -> (B,) mean over each resample's drawn seeds."""
    seeds, resamples = per_seed.shape
    return (seed_counts(seeds, resamples=resamples) * per_seed.T).sum(axis=1) / seeds


def noise(seeds: int) -> str:
    """What an interval over ``seeds`` training seeds covers."""
    return "seeds and clips" if seeds > 1 else "clips only"


@dataclass
class SettingStats:
    """Per strategy of one setting: its training seeds (S,), point values per seed (S,) and values on every clip
    resample per seed (S, B), per metric; all strategies share the clip resamples."""

    setting: tuple
    seeds: dict  # strategy -> sorted tuple of training seeds
    points: dict  # strategy -> metric -> (S,) values of the seeds
    per_seed: dict  # strategy -> metric -> (S, B) values on the clip resamples

    def resampled(self, strategy: str, metric: str) -> np.ndarray:
        """(B,) two-stage bootstrap distribution of the strategy's seed mean."""
        return two_stage(self.per_seed[strategy][metric])


def _per_run(runs: list[RunPredictions], *, resamples: int, seed: int) -> list[dict]:
    """Per run: metric -> (B,) values on the clip resamples; one pass over the resamples serves every run."""
    parts = [[] for _ in runs]
    for weights in resample_chunks(runs[0].labels.shape[0], resamples=resamples, seed=seed):
        for part, run in zip(parts, runs, strict=True):
            part.append(resampled_metrics(run.probs, run.labels, run.schema, weights, threshold=run.threshold))
    return [{m: np.concatenate([p[m] for p in part]) for m in METRICS} for part in parts]


def setting_stats(runs: list[RunPredictions], *, resamples: int = RESAMPLES, seed: int = SEED) -> list[SettingStats]:
    """Group runs by setting; all runs of a setting share test clips (checked) and clip resamples. A strategy's
    repeated seed keeps its last run."""
    found = []
    for setting in sorted({r.setting for r in runs}, key=str):
        mine = list({(r.strategy, r.seed): r for r in runs if r.setting == setting}.values())
        reference = mine[0].labels
        if any(r.labels.shape != reference.shape or not np.array_equal(r.labels, reference) for r in mine):
            continue  # different test clips: nothing can be paired
        mine.sort(key=lambda r: r.seed)
        values = dict(zip(((r.strategy, r.seed) for r in mine), _per_run(mine, resamples=resamples, seed=seed),
                          strict=True))
        seeds, points, per_seed = {}, {}, {}
        for strategy in _strategy_order({r.strategy for r in mine}):
            ordered = [r for r in mine if r.strategy == strategy]  # by seed
            point = [evaluate(r.probs, r.labels, r.schema, threshold=r.threshold) for r in ordered]  # = recorded
            seeds[strategy] = tuple(r.seed for r in ordered)
            per_seed[strategy] = {m: np.stack([values[(strategy, r.seed)][m] for r in ordered]) for m in METRICS}
            points[strategy] = {m: np.array([p[m] for p in point]) for m in METRICS}
        found.append(SettingStats(setting, seeds, points, per_seed))
    return found


def interval_rows(stats: SettingStats) -> list[dict]:
    rows = []
    for strategy, values in stats.points.items():
        for metric in METRICS:
            low, high = interval(stats.resampled(strategy, metric))
            seeds = len(values[metric])
            spread = float(np.std(values[metric], ddof=1)) if seeds > 1 else float("nan")
            rows.append({**dict(zip(SETTING, stats.setting, strict=True)), "strategy": strategy, "seeds": seeds,
                         "noise": noise(seeds), "metric": metric, "mean": float(values[metric].mean()),
                         "std": spread, "ci_low": low, "ci_high": high})
    return rows


def paired_difference(stats: SettingStats, strategy: str, reference: str, metric: str) -> dict | None:
    """strategy - reference over the seeds both have, paired by seed (None where they share no seed): the point
    (mean over those seeds), the (B,) two-stage distribution and the number of seeds."""
    common = sorted(set(stats.seeds[strategy]) & set(stats.seeds[reference]))
    if not common:
        return None
    mine, theirs = ([stats.seeds[name].index(s) for s in common] for name in (strategy, reference))
    per_seed = stats.per_seed[strategy][metric][mine] - stats.per_seed[reference][metric][theirs]  # (S, B)
    point = stats.points[strategy][metric][mine] - stats.points[reference][metric][theirs]  # (S,)
    return {"difference": float(point.mean()), "resampled": two_stage(per_seed), "seeds": len(common)}


def _verdict(resampled: np.ndarray, p_adjusted: float) -> str:
    """better / worse (the side of 0 where most resampled differences lie) only where the adjusted p < ALPHA."""
    if p_adjusted >= ALPHA:
        return NO_DIFFERENCE
    return "better" if np.median(resampled) > 0 else "worse"


def _family(stats: SettingStats, metric: str) -> list[dict]:
    """Every unordered pair of the setting sharing a seed (later strategy - earlier one), with its raw p-value."""
    names, tests = list(stats.points), []
    for i, strategy in enumerate(names):
        for reference in names[:i]:
            test = paired_difference(stats, strategy, reference, metric)
            if test is not None:
                tests.append({"strategy": strategy, "reference": reference, **test,
                              "p_raw": bootstrap_p(test["resampled"])})
    return tests


def _pair_rows(stats: SettingStats, test: dict, metric: str, p_adjusted: float, family: int) -> list[dict]:
    """Both orders of one tested pair; the reversed one is the negated difference with the same p-values."""
    rows = []
    for sign, strategy, reference in ((1, test["strategy"], test["reference"]),
                                      (-1, test["reference"], test["strategy"])):
        low, high = interval(sign * test["resampled"])
        rows.append({**dict(zip(SETTING, stats.setting, strict=True)), "strategy": strategy, "reference": reference,
                     "metric": metric, "seeds": test["seeds"], "noise": noise(test["seeds"]),
                     "difference": sign * test["difference"] + 0.0, "ci_low": low + 0.0, "ci_high": high + 0.0,
                     "p_raw": test["p_raw"], "p_adjusted": p_adjusted, "family_size": family,
                     "verdict": _verdict(sign * test["resampled"], p_adjusted)})
    return rows


def paired_rows(stats: SettingStats) -> list[dict]:
    """strategy - reference for every ordered pair and metric, Holm-adjusted over the family of the setting's
    unordered pairs of that metric (each metric is its own family)."""
    rows = []
    for metric in METRICS:
        tests = _family(stats, metric)
        for test, p_adjusted in zip(tests, holm([t["p_raw"] for t in tests]), strict=True):
            rows += _pair_rows(stats, test, metric, float(p_adjusted), len(tests))
    return rows


def _strategy_order(names) -> list[str]:
    return [s for s in REFERENCES if s in names] + sorted(n for n in names if n not in REFERENCES)


# ---- report files -----------------------------------------------------------------------------------------------

def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _with_interval(row: dict) -> str:
    spread = f" ± {_pct(row['std'])}" if row["seeds"] > 1 else ""
    return f"{_pct(row['mean'])}{spread} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"


def _difference(row: dict) -> str:
    mark = " *" if row["verdict"] != NO_DIFFERENCE else ""
    return (f"{100 * row['difference']:+.2f} [{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}] "
            f"p_adj {_p(row['p_adjusted'])}{mark}")


def _setting_title(setting: tuple) -> str:
    values = dict(zip(SETTING, setting, strict=True))
    ranks = f" over {values['world_size']} ranks" if (values["world_size"] or 1) > 1 else ""
    switches = "" if values["switches"] in (None, "-") else f" ({values['switches']})"
    return (f"dataset {values['dataset']}, backbone {values['backbone']}, {values['frames']} frames, batch "
            f"{values['batch_size']}{ranks}, {values['precision']}{switches}")


def _interval_table(rows: list[dict]) -> str:
    table = {}
    for row in rows:
        table.setdefault(row["strategy"], {"strategy": row["strategy"], "seeds": row["seeds"], "noise": row["noise"]})
        table[row["strategy"]][f"{LABELS[row['metric']]} (%)"] = _with_interval(row)
    return tabulate(list(table.values()), headers="keys", tablefmt="github", disable_numparse=True)


def _paired_table(rows: list[dict]) -> str:
    table = {}
    for row in rows:
        entry = table.setdefault(row["strategy"], {"strategy": row["strategy"]})
        entry[f"{LABELS[row['metric']]} vs {row['reference']}"] = _difference(row)
    return tabulate(list(table.values()), headers="keys", tablefmt="github", disable_numparse=True)


def _matrix(rows: list[dict], names: list[str]) -> str:
    """macro-F1 row - column, points; * = better / worse after the correction."""
    cells = {(r["strategy"], r["reference"]): r for r in rows if r["metric"] == "macro_f1"}
    lines = []
    for strategy in names:
        line = {"strategy": strategy}
        for reference in names:
            row = cells.get((strategy, reference))
            mark = "" if row is None or row["verdict"] == NO_DIFFERENCE else "*"
            line[reference] = "" if row is None else f"{100 * row['difference']:+.1f}{mark}"
        lines.append(line)
    return tabulate(lines, headers="keys", tablefmt="github", disable_numparse=True)


def _names(rows: list[dict], reference: str, verdict: str) -> list[str]:
    return [r["strategy"] for r in rows
            if r["reference"] == reference and r["metric"] == "macro_f1" and r["verdict"] == verdict]


def _noise_sentence(counts: Counter, unit: str) -> str:
    """Which noise the intervals and p-values cover, by number of seeds; one seed says clips only."""
    if set(counts) == {1}:
        return ("Noise covered: test clips only (clips only: 1 training seed, so intervals and verdicts say nothing "
                "about training noise; another seed may change them).")
    if len(counts) == 1:
        return f"Noise covered: training seeds and test clips ({next(iter(counts))} seeds, two-stage bootstrap)."
    parts = [f"{'training seeds and test clips' if s > 1 else 'test clips only (clips only)'} for the {n} {unit} "
             f"over {s} seed{'s' if s > 1 else ''}" for s, n in sorted(counts.items(), reverse=True)]
    return "Noise covered: " + "; ".join(parts) + "."


def verdict_sentences(stats: SettingStats, pairs: list[dict], intervals: list[dict]) -> list[str]:
    """In words, from the corrected verdicts only: the noise covered, the family and its correction, which
    strategies are better / worse than ``full`` and ``frozen`` on macro-F1, and how many pairs differ."""
    def listed(names: list[str]) -> str:
        return ", ".join(f"`{n}`" for n in names) if names else "none"

    macro = [r for r in pairs if r["metric"] == "macro_f1" and r["strategy"] > r["reference"]]
    widths = [r["ci_high"] - r["ci_low"] for r in intervals if r["metric"] == "macro_f1"]
    if not macro:
        return [_noise_sentence(Counter(r["seeds"] for r in intervals if r["metric"] == "macro_f1"), "strategies")]
    family = macro[0]["family_size"]
    sentences = [_noise_sentence(Counter(r["seeds"] for r in macro), "pairs"),
                 f"Verdicts: {CORRECTION} correction over the family of {family} strategy pairs per metric; better "
                 f"or worse only where the adjusted p < {ALPHA:.2f}, else {NO_DIFFERENCE}."]
    for reference in (r for r in REFERENCES if r in stats.points):
        better = listed(_names(pairs, reference, "better"))
        sentences.append(f"Against `{reference}` (macro-F1, paired): better {better}; "
                         f"worse {listed(_names(pairs, reference, 'worse'))}; {NO_DIFFERENCE} "
                         f"{listed(_names(pairs, reference, NO_DIFFERENCE))}.")
    differ = sum(r["verdict"] != NO_DIFFERENCE for r in macro)
    sentences.append(f"Of all {family} strategy pairs, {differ} differ on macro-F1 after the correction; the other "
                     f"{family - differ}: {NO_DIFFERENCE}.")
    resamples = next(iter(stats.per_seed.values()))["macro_f1"].shape[1]
    if family * 2 / (resamples + 1) >= ALPHA:  # the smallest p a bootstrap of this size gives, Holm-adjusted
        sentences.append(f"With {family} pairs, {resamples:,} resamples cannot reach an adjusted p < {ALPHA:.2f}.")
    if len(stats.points) * (len(stats.points) - 1) // 2 > family:
        sentences.append("Pairs that share no training seed are not compared.")
    sentences.append(f"A single strategy's 95 % interval spans {100 * min(widths):.1f}-{100 * max(widths):.1f} "
                     "macro-F1 points.")
    return sentences


def method_text(resamples: int = RESAMPLES) -> str:
    """The method paragraph that heads statistics.md."""
    return (f"Two-stage percentile bootstrap ({resamples:,} resamples, generator seeds {SEED} for the clips and "
            f"{SEED_STAGE} for the training seeds, {int(100 * LEVEL)} % intervals): each resample draws the "
            "training seeds with replacement, then the test clips with replacement, and takes the mean over the "
            "drawn seeds on the drawn clips. All strategies of a setting share the clip resamples, and a comparison "
            "draws the seeds both strategies have, paired by seed, so differences are paired over clips and seeds. "
            "With one seed the interval covers test-clip sampling only (clips only), not training noise. `p_adj`: "
            "two-sided bootstrap p-value 2 min(#{d <= 0} + 1, #{d >= 0} + 1) / (B + 1), adjusted by "
            f"{CORRECTION} over every pair of strategies of the setting (one family per metric); `*`: better or "
            f"worse, adjusted p < {ALPHA:.2f}; otherwise {NO_DIFFERENCE}. Intervals are per comparison and "
            f"uncorrected, so one may exclude 0 where the corrected verdict is {NO_DIFFERENCE}. Cells: value (%) "
            "[interval]; with several seeds, mean ± sample std over seeds [interval].")


def write_statistics(records: list[dict], out: Path, *, resamples: int = RESAMPLES) -> tuple[list[Path], str]:
    """statistics.md, statistics.csv (intervals) and paired_comparisons.csv (every pair); returns the files and a
    short paragraph for summary.md ("" when no run stored its test predictions)."""
    all_stats = setting_stats(load_predictions(records), resamples=resamples)
    if not all_stats:
        return [], ""
    lines = ["# Statistics: confidence intervals and paired comparisons", "",
             "Generated by `python -m bench.reporting.report`: regenerate, do not edit.", "", method_text(resamples),
             ""]
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
    text = ("\n## Which differences these runs can tell apart\n\n" + "\n\n".join(paragraph)
            + "\n\nIntervals and every pair: `statistics.md`.\n")
    return written, text
