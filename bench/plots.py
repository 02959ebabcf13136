"""Figures of the report, drawn with seaborn on matplotlib's Agg backend (no display, no pyplot global state).

Every function takes a DataFrame of ``bench.report`` (``COLUMNS`` rows or ``aggregate`` rows) and returns the
``matplotlib.figure.Figure`` so tests can inspect axes and labels; ``save_figure`` writes the PNG.

* ``efficiency_figure`` -- VTFPAR++ (Wang et al. 2024) Fig. 1 (c-f) as four panels: peak training memory, F1,
  training step time, tunable parameters, one bar per strategy (error bars: sample std over seeds).
* ``pareto_figure`` -- F1 vs peak training memory, marker area proportional to tunable parameters, Pareto front
  (no other strategy uses less memory and reaches a higher F1).
* ``cost_curves_figure`` -- peak memory and step time vs frames per clip and vs batch size, one line per strategy.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bench.report import select_setting, sort_number, strategy_order  # noqa: E402
from bench.results import write_atomic  # noqa: E402

DPI = 120
F1_LABELS = {"paper_f1": "paper-F1 (%)", "macro_f1": "macro-F1 (%)"}
MEM_LABEL = "peak training memory (MiB)"
STEP_LABEL = "training step time (ms)"
PARAMS_LABEL = "tunable parameters (M)"


def palette(strategies) -> dict[str, tuple]:
    """One colour per strategy, assigned in report order so a strategy keeps its colour across figures."""
    order = strategy_order(strategies)
    colours = sns.color_palette("tab10" if len(order) <= 10 else "husl", max(len(order), 1))
    return dict(zip(order, colours, strict=False))


def derived(runs: pd.DataFrame, f1: str | None) -> pd.DataFrame:
    """Plot units from raw columns: MiB, millions of parameters, percent F1 (all float64; NaN where missing)."""
    return pd.DataFrame({
        "strategy": runs["strategy"].astype("object"),
        "frames": runs["frames"].astype("float64"), "batch_size": runs["batch_size"].astype("float64"),
        "mem_mib": runs["peak_mem_bytes"].astype("float64") / 2**20,
        "step_ms": runs["step_time_ms_median"].astype("float64"),
        "params_m": runs["params_trainable"].astype("float64") / 1e6,
        "f1_pct": runs[f1].astype("float64") * 100 if f1 else float("nan"),
    }, index=runs.index)


def note(ax: Axes, text: str) -> None:
    """Explain an empty panel inside it instead of leaving it blank or failing."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True, fontsize=9, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def memory_label(runs: pd.DataFrame) -> str:
    kinds = sorted({str(k) for k in runs.get("peak_mem_kind", pd.Series(dtype="object")).dropna()})
    return MEM_LABEL if not kinds else f"{MEM_LABEL[:-1]}, {', '.join(kinds)})"


def short_number(value: float) -> str:
    """Bar labels without exponents: 1020 -> "1020", 24.456 -> "24.5", 0.0613 -> "0.0613"."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _bar_panel(ax: Axes, data: pd.DataFrame, column: str, *, ylabel: str, title: str, colours: dict) -> None:
    ax.set_title(title)
    ax.set_xlabel("strategy")
    ax.set_ylabel(ylabel)
    present = data.dropna(subset=[column])
    if present.empty:
        note(ax, "not measured in these runs")
        return
    order = [s for s in colours if s in set(present["strategy"])]
    sns.barplot(data=present, x="strategy", y=column, order=order, hue="strategy", hue_order=order,
                palette=colours, errorbar="sd", legend=False, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, labels=[short_number(bar.get_height()) for bar in container], fontsize=8)
    ax.tick_params(axis="x", labelrotation=30)


def efficiency_figure(runs: pd.DataFrame, *, f1: str | None, title: str) -> Figure:
    """VTFPAR++ Fig. 1 (c-f): memory, F1, step time and tunable parameters per strategy at one setting."""
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).ravel()
    data, colours = derived(runs, f1), palette(runs["strategy"])
    panels = (("mem_mib", memory_label(runs), "(c) peak training memory"),
              ("f1_pct", F1_LABELS.get(f1, "F1 (%)"), f"(d) test {F1_LABELS.get(f1, 'F1')[:-4]}"),
              ("step_ms", STEP_LABEL, "(e) training step time (median)"),
              ("params_m", PARAMS_LABEL, "(f) tunable parameters"))
    for ax, (column, ylabel, panel_title) in zip(axes, panels, strict=True):
        _bar_panel(ax, data, column, ylabel=ylabel, title=panel_title, colours=colours)
    fig.suptitle(title)
    return fig


def pareto_front(x: list[float], y: list[float]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), in increasing x."""
    order = sorted(range(len(x)), key=lambda i: (x[i], -y[i]))
    front, best = [], float("-inf")
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return front


def _pareto_axis(groups: pd.DataFrame) -> tuple[str, str, str]:
    """Peak memory when measured; otherwise step time (CPU runs record no allocator peak), said in the label."""
    if groups["peak_mem_bytes_mean"].notna().any():
        return "peak_mem_bytes_mean", MEM_LABEL, ""
    return "step_time_ms_median_mean", STEP_LABEL, " (peak memory not measured: step time instead)"


def pareto_figure(groups: pd.DataFrame, *, f1: str | None, title: str) -> Figure:
    """F1 vs peak memory per strategy (``aggregate`` rows at one setting); marker area = tunable parameters."""
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x_column, x_label, caveat = _pareto_axis(groups)
    scale = 1 / 2**20 if x_column == "peak_mem_bytes_mean" else 1.0
    ax.set_xlabel(x_label)
    ax.set_ylabel(F1_LABELS.get(f1, "F1 (%)"))
    ax.set_title("F1 vs training cost" + caveat)
    fig.suptitle(title)
    points = groups.dropna(subset=[x_column, f"{f1}_mean"]) if f1 else groups.iloc[0:0]
    if points.empty:
        note(ax, "no run with both F1 and cost figures")
        return fig
    _draw_pareto(ax, points, x=points[x_column].astype("float64") * scale,
                 y=points[f"{f1}_mean"].astype("float64") * 100)
    return fig


def _draw_pareto(ax: Axes, points: pd.DataFrame, *, x: pd.Series, y: pd.Series) -> None:
    params = points["params_trainable_mean"].astype("float64").fillna(0.0) / 1e6
    largest = max(float(params.max()), 1e-12)
    colours = palette(points["strategy"])
    sizes = 60 + 940 * params / largest
    ax.scatter(x, y, s=sizes, c=[colours[s] for s in points["strategy"]], alpha=0.75, edgecolors="black")
    for name, xi, yi, p in zip(points["strategy"], x, y, params, strict=True):
        ax.annotate(f"{name} ({p:.3g} M)", (xi, yi), xytext=(6, 6), textcoords="offset points", fontsize=8)
    front = pareto_front(list(x), list(y))
    front_x = [x.iloc[i] for i in front] + [float(x.max())]  # the last level holds up to the costliest point
    front_y = [y.iloc[i] for i in front] + [y.iloc[front[-1]]]
    ax.plot(front_x, front_y, drawstyle="steps-post", color="0.4", linestyle="--", label="Pareto front")
    ax.legend(loc="lower right", title=f"marker area ∝ tunable params (max {largest:.3g} M)", fontsize=8,
              title_fontsize=8)
    ax.margins(0.15)


COST_PANELS = (("mem_mib", MEM_LABEL, "frames", "frames per clip"), ("mem_mib", MEM_LABEL, "batch_size",
                                                                       "batch size (clips)"),
               ("step_ms", STEP_LABEL, "frames", "frames per clip"), ("step_ms", STEP_LABEL, "batch_size",
                                                                      "batch size (clips)"))


def _cost_panel(ax: Axes, data: pd.DataFrame, *, y: str, x: str, fixed: str, colours: dict) -> bool:
    values = sorted(data[x].dropna().unique())
    if len(values) < 2:
        note(ax, f"panel skipped: only one {x.replace('_', ' ')} value ({', '.join(f'{v:g}' for v in values)})"
                 f"\nin these runs{fixed}")
        return False
    if data[y].isna().all():
        note(ax, "not measured in these runs")
        return False
    order = [s for s in colours if s in set(data["strategy"])]
    sns.lineplot(data=data.dropna(subset=[y]), x=x, y=y, hue="strategy", hue_order=order, palette=colours,
                 marker="o", errorbar="sd", err_style="bars", ax=ax)
    ax.set_xticks(values)
    return True


def cost_curves_figure(runs: pd.DataFrame, *, reference: dict | None, title: str) -> Figure:
    """2 x 2: (peak memory, step time) x (vs frames at the reference batch, vs batch at the reference frames)."""
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).ravel()
    data, colours, legend_done = derived(runs, None), palette(runs["strategy"]), False
    for ax, (y, y_label, x, x_label) in zip(axes, COST_PANELS, strict=True):
        ax.set_xlabel(x_label)
        ax.set_ylabel(memory_label(runs) if y == "mem_mib" else y_label)
        subset, fixed = _cost_subset(runs, data, x=x, reference=reference)
        ax.set_title(f"{y_label.split(' (')[0]} vs {x_label.split(' (')[0]}{fixed}")
        drawn = _cost_panel(ax, subset, y=y, x=x, fixed=fixed, colours=colours)
        if drawn and legend_done:
            ax.get_legend().remove()
        legend_done |= drawn
    fig.suptitle(title)
    return fig


def _cost_subset(runs: pd.DataFrame, data: pd.DataFrame, *, x: str, reference: dict | None
                 ) -> tuple[pd.DataFrame, str]:
    """Rows varying only ``x`` (same dataset and backbone as the reference setting), the other sweep axis held at
    the value under which ``x`` takes the most values: a frames sweep at batch 16 and a batch sweep at 2 frames,
    written to one folder, give both curves. Ties go to the reference setting's value, then the larger one."""
    if reference is None:
        return data.iloc[0:0], ""
    other = "batch_size" if x == "frames" else "frames"
    same = select_setting(runs, {key: reference[key] for key in ("dataset", "backbone")})
    spread = same.groupby(same[other].astype("object"), dropna=False)[x].nunique()
    held = max(spread.items(), key=lambda item: (item[1], item[0] == reference[other], sort_number(item[0])))[0]
    chosen = select_setting(same, {other: held})
    fixed = f" (batch {held})" if other == "batch_size" else f" ({held} frames)"
    return data.loc[chosen.index], fixed


def save_figure(fig: Figure, path: Path) -> Path:
    """PNG at a fixed DPI; the same data gives the same bytes."""
    return write_atomic(path, lambda handle: fig.savefig(handle, dpi=DPI, format=Path(path).suffix[1:]), binary=True)
