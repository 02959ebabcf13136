"""The cost plan's figure: predicted peak memory against batch size per strategy, with the GPUs' lines.

Drawn from ``<out>/plan/plan.json`` alone (``run_bench.py --plan`` writes both): each run's setting contributes its
peak-vs-batch curve (``peak_bytes_by_batch``: live tensor bytes of one training step, exact at every batch from the
one traced step), one line per strategy and precision; each GPU of ``--gpu-memory`` is a horizontal line at its
memory less the CUDA context the plan assumed. Live bytes lie below what the caching allocator reserves (rounding,
segments: the plan's ``gpus`` figures), so a curve crossing a GPU's line is a lower bound on where it stops fitting.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.config import load_json
from bench.reporting.plots import save_figure

GIB = 2 ** 30
FIGURE = "peak_vs_batch.png"


def curve_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per (strategy, precision, batch) of the runs' curves; a setting planned at several batch sizes
    gives the same curve once."""
    rows = {}
    for run in runs:
        setting = run["setting"]
        label = (run["strategy"], setting["precision"] + ("+half" if setting.get("half_frozen_backbone") else ""))
        for batch, peak in run.get("peak_bytes_by_batch", {}).items():
            rows[(*label, int(batch))] = peak / GIB
    return pd.DataFrame([{"strategy": s, "precision": p, "batch": b, "peak_gib": v} for (s, p, b), v in rows.items()])


def gpu_lines(runs: list[dict]) -> dict[str, float]:
    """GPU name -> GiB usable by the step (memory less the assumed CUDA context), from the plan's predictions."""
    lines = {}
    for run in runs:
        for name, gpu in run.get("gpus", {}).items():
            lines[name] = (gpu["gpu_memory_bytes"] - gpu["cuda_context_bytes_assumed"]) / GIB
    return lines


def write_plan_figure(plan_path: Path) -> Path | None:
    """``peak_vs_batch.png`` beside ``plan.json``; None when no run has a curve (each traced at its own batch)."""
    runs = load_json(plan_path)["runs"]
    frame = curve_frame(runs)
    if frame.empty:
        return None
    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sns.lineplot(frame, x="batch", y="peak_gib", hue="strategy", style="precision", marker="o", ax=ax)
    for name, usable in sorted(gpu_lines(runs).items(), key=lambda kv: kv[1]):
        ax.axhline(usable, color="grey", linestyle=":", linewidth=1)
        ax.annotate(name, (frame["batch"].min(), usable), textcoords="offset points", xytext=(2, 2), fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="batch size (clips)",
           ylabel="predicted peak, live tensor GiB (one training step)",
           title="Cost plan: predicted peak vs batch (dotted: GPU memory less the assumed context)")
    ax.set_xticks(sorted(frame["batch"].unique()), labels=[str(b) for b in sorted(frame["batch"].unique())])
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, Path(plan_path).parent / FIGURE)
