"""Accuracy whiskers: in Fig. 1 (d) and on the Pareto plot, ± the sample std over seeds where a strategy has two or
more seeds, else the bootstrap interval that bench/measure/statistics.py wrote to statistics.csv, with the kind named
in the figure's legend or title."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from bench.measure import metrics, predictions, statistics
from bench.reporting import intervals, plots, report
from data.schema import MARS
from tests.test_report import fake_record

MEMORY = {"full": 1000.0, "frozen": 500.0, "lora": 700.0}


def _labels(n: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    labels = np.zeros((n, MARS.num_columns), dtype=np.int64)
    for group, cols in zip(MARS.groups, MARS.group_slices(), strict=True):
        if group.binary:
            labels[:, cols.start] = rng.random(n) < 0.3
        else:
            labels[np.arange(n), cols.start + rng.integers(0, group.width, n)] = 1
    return labels


def predicted(strategy: str, *, seed: int, skill: float, labels: np.ndarray) -> dict:
    """A fake record with stored test predictions; its recorded paper-F1 is the one of those predictions."""
    rng = np.random.default_rng(100 * seed + len(strategy))
    probs = np.clip(skill * labels + (1 - skill) * rng.random(labels.shape), 0, 1).astype(np.float32)
    f1 = metrics.evaluate(probs, labels, MARS)["paper_f1"]
    record = fake_record(strategy, seed=seed, f1=f1, mem_mib=MEMORY[strategy])
    record["metrics"]["test_predictions"] = predictions.encode(probs, labels)
    return record


@pytest.fixture(scope="module")
def with_intervals(tmp_path_factory):
    """full: two seeds; frozen and lora: one seed each; statistics.csv written by the statistics module."""
    labels = _labels()
    runs = (("full", 0, 0.5), ("full", 1, 0.45), ("frozen", 0, 0.2), ("lora", 0, 0.4))
    records = [predicted(name, seed=seed, skill=skill, labels=labels) for name, seed, skill in runs]
    out = tmp_path_factory.mktemp("stats")
    statistics.write_statistics(records, out)
    frame = report.sort_runs(report.to_frame(records))
    return frame, report.aggregate(frame), intervals.read_intervals(out / "statistics.csv")


def bar_whiskers(ax) -> dict[str, tuple[float, float]]:
    """strategy -> (low, high) of the horizontal whiskers on a bar panel (bar i sits at y = i)."""
    names = [t.get_text() for t in ax.get_yticklabels()]
    container = next(c for c in ax.containers if isinstance(c, ErrorbarContainer))
    return {names[round(seg[0][1])]: (seg[0][0], seg[1][0]) for seg in container.lines[2][0].get_segments()}


def pareto_bars(ax) -> dict[float, tuple[float, float]]:
    """x (memory, MiB) -> (low, high) of the vertical error bars."""
    container = next(c for c in ax.containers if isinstance(c, ErrorbarContainer))
    return {round(seg[0][0], 6): (seg[0][1], seg[1][1]) for seg in container.lines[2][0].get_segments()}


def _interval(table: pd.DataFrame, strategy: str) -> tuple[float, float]:
    row = table[(table["strategy"] == strategy) & (table["metric"] == "paper_f1")].iloc[0]
    return 100 * row["ci_low"], 100 * row["ci_high"]


def test_seed_std_for_several_seeds_and_no_whisker_for_one_seed_without_intervals():
    records = [fake_record("full", seed=0, f1=0.6), fake_record("full", seed=1, f1=0.7),
               fake_record("frozen", f1=0.4, mem_mib=500)]
    frame = report.sort_runs(report.to_frame(records))
    fig = plots.efficiency_figure(frame, f1="paper_f1", title="t")
    std = 100 * frame[frame["strategy"] == "full"]["paper_f1"].std()  # ddof = 1: 7.07 points
    assert bar_whiskers(fig.axes[1]) == {"full": pytest.approx((65 - std, 65 + std))}
    assert "whiskers: " + intervals.SEED_STD in [t.get_text() for t in fig.legends[0].get_texts()]
    pareto = plots.pareto_figure(report.aggregate(frame), f1="paper_f1", title="t")
    assert pareto_bars(pareto.axes[0]) == {1000.0: pytest.approx((65 - std, 65 + std))}
    assert intervals.SEED_STD in pareto.axes[0].get_title()


def test_single_seed_whiskers_are_the_statistics_file_intervals(with_intervals):
    frame, agg, table = with_intervals
    assert set(table["strategy"]) == {"full", "frozen", "lora"}
    fig = plots.efficiency_figure(frame, f1="paper_f1", title="t", intervals=table)
    drawn = bar_whiskers(fig.axes[1])
    for name in ("frozen", "lora"):
        assert drawn[name] == pytest.approx(_interval(table, name), abs=1e-9)
    full = 100 * frame[frame["strategy"] == "full"]["paper_f1"].astype("float64")
    assert drawn["full"] == pytest.approx((full.mean() - full.std(), full.mean() + full.std()))  # seeds: std wins
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"whiskers: {intervals.SEED_STD}" in legend and f"whiskers: {intervals.bootstrap_kind()}" in legend
    pareto = plots.pareto_figure(agg, f1="paper_f1", title="t", intervals=table)
    bars = pareto_bars(pareto.axes[0])
    assert bars[MEMORY["lora"]] == pytest.approx(_interval(table, "lora"), abs=1e-9)
    assert bars[MEMORY["frozen"]] == pytest.approx(_interval(table, "frozen"), abs=1e-9)
    assert intervals.bootstrap_kind() in pareto.axes[0].get_title()


def test_an_interval_shared_by_two_precisions_is_not_drawn(with_intervals):
    """statistics.SETTING may not tell an fp32 from a bf16 run: an interval that could be either is left out."""
    frame, _, table = with_intervals
    bf16 = frame[frame["strategy"] == "lora"].assign(precision="bf16", run_id="lora_bf16")
    agg = report.aggregate(pd.concat([frame, bf16], ignore_index=True))
    spread = intervals.accuracy_spread(agg, table, metric="paper_f1").set_index("strategy")
    assert spread.loc["lora", "low"].isna().all() and spread.loc["frozen", "low"] == pytest.approx(
        _interval(table, "frozen")[0] / 100)
