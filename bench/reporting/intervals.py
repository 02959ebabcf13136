"""How sure each accuracy in a figure is: the whisker drawn around every F1 bar and Pareto marker.

A strategy measured with two or more seeds gets mean ± sample std over its seeds (ddof = 1, the spread in
``summary.md``): training noise is what decides whether a ranking holds on the next sweep. A strategy with a single
seed has no seed spread, so it gets the bootstrap interval over test clips that ``bench/measure/statistics.py`` wrote to
this report's ``statistics.csv`` (how much the score would move on another draw of test clips). A strategy with one
seed and no stored test predictions gets no whisker, and the legend of the figure names every kind it shows.

The figures take the interval file's numbers as they are: the bootstrap is computed once, by the statistics module,
and a figure never disagrees with ``statistics.md``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from bench.measure import statistics

SEED_STD = "± sample std over seeds"
INTERVAL_COLUMNS = [*statistics.SETTING, "strategy", "metric", "ci_low", "ci_high"]
SPREAD_COLUMNS = ["strategy", "mean", "low", "high", "kind"]


def bootstrap_kind() -> str:
    """Words for the statistics module's interval, with its level (``statistics.LEVEL``)."""
    return f"{100 * statistics.LEVEL:g} % bootstrap interval over test clips (1 seed)"


def read_intervals(path: Path) -> pd.DataFrame:
    """This report's ``statistics.csv``: one row per (setting, strategy, metric) with ``ci_low`` / ``ci_high``
    (fractions); empty where no run stored its test predictions and the file was not written."""
    if not Path(path).is_file():
        return pd.DataFrame(columns=INTERVAL_COLUMNS)
    return pd.read_csv(path)


def _key(values) -> tuple[str, ...]:
    """One spelling for a setting read from a CSV (``2``) and from the results frame (``Int64`` 2)."""
    return tuple("" if pd.isna(v) else str(v) for v in values)


def _bootstrap_lookup(groups: pd.DataFrame, intervals: pd.DataFrame | None, *, keys: list[str],
                      metric: str) -> dict:
    """(statistics setting, strategy) -> (low, high). A key shared by several rows of ``groups`` (runs that differ
    only in what the statistics module does not tell apart, such as precision) is left out: the interval would be
    one of theirs, and it is not said which."""
    if intervals is None or intervals.empty or not set(INTERVAL_COLUMNS) <= set(intervals.columns):
        return {}
    rows = intervals[intervals["metric"] == metric]
    lookup = {_key(row[keys]): (float(row["ci_low"]), float(row["ci_high"])) for _, row in rows.iterrows()}
    shared = Counter(_key(row[keys]) for _, row in groups.iterrows())
    return {key: value for key, value in lookup.items() if shared[key] == 1}


def accuracy_spread(groups: pd.DataFrame, intervals: pd.DataFrame | None, *, metric: str | None) -> pd.DataFrame:
    """Per aggregated row (``tables.aggregate``, one strategy at one setting): the ``metric`` mean and the whisker's
    ``low`` / ``high`` ends (fractions; NaN: no whisker) and its ``kind`` in words."""
    if metric is None or groups.empty:
        return pd.DataFrame(columns=SPREAD_COLUMNS)
    keys = [k for k in statistics.SETTING if k in groups.columns] + ["strategy"]
    bootstrap = _bootstrap_lookup(groups, intervals, keys=keys, metric=metric)
    rows = []
    for _, row in groups.iterrows():
        mean, std = float(row[f"{metric}_mean"]), float(row[f"{metric}_std"])
        if int(row["seeds"]) >= 2 and pd.notna(std):
            low, high, kind = mean - std, mean + std, SEED_STD
        elif _key(row[keys]) in bootstrap:
            (low, high), kind = bootstrap[_key(row[keys])], bootstrap_kind()
        else:
            low, high, kind = float("nan"), float("nan"), ""
        rows.append({"strategy": str(row["strategy"]), "mean": mean, "low": low, "high": high, "kind": kind})
    return pd.DataFrame(rows, columns=SPREAD_COLUMNS, index=groups.index)


def kinds_shown(spread: pd.DataFrame) -> list[str]:
    """The kinds of whisker a figure draws, seed spread first: its legend names each."""
    present = {k for k, low in zip(spread["kind"], spread["low"], strict=True) if k and pd.notna(low)}
    return [k for k in (SEED_STD, bootstrap_kind()) if k in present]
