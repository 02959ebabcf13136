"""Figures of the report, drawn with seaborn on matplotlib's Agg backend (no display, no pyplot global state).

Every function takes a DataFrame of ``bench.reporting.report`` (``COLUMNS`` rows or ``aggregate`` rows) and returns the
``matplotlib.figure.Figure`` so tests can inspect axes and labels; ``save_figure`` writes the PNG. Built to stay
legible at 14 strategies and more: one colour per strategy *family* (shades of it for the family's variants, the
same in every figure and every report), horizontal bars sorted by value, Pareto labels placed so they do not overlap.

* ``efficiency_figure`` -- VTFPAR++ (Wang et al. 2024) Fig. 1 (c-f) as four panels: peak training memory, F1,
  training step time, tunable parameters, one horizontal bar per strategy sorted best first (whiskers: sample
  std over seeds; for the F1 of a single-seed strategy, its bootstrap interval, ``bench/reporting/intervals.py``).
* ``pareto_figure`` -- F1 vs peak training memory, marker area proportional to tunable parameters, Pareto front
  (no other strategy uses less memory and reaches a higher F1), F1 error bars as in Fig. 1 (d).
* ``cost_curves_figure`` -- peak memory and step time vs frames per clip and vs batch size, one line per strategy.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from bench.records import write_atomic  # noqa: E402
from bench.reporting.intervals import accuracy_spread, kinds_shown  # noqa: E402
from bench.reporting.labels import place_labels  # noqa: E402
from bench.reporting.tables import aggregate, select_setting, sort_number, strategy_order  # noqa: E402

DPI = 120
F1_LABELS = {"paper_f1": "paper-F1 (%)", "macro_f1": "macro-F1 (%)"}
MEM_LABEL = "peak training memory (MiB)"
STEP_LABEL = "training step time (ms)"
PARAMS_LABEL = "tunable parameters (M)"
# One fixed colour per registered family, so a family looks the same in every figure of every report; the two
# reference points are neutral. Families not listed take the spare colours in alphabetical order.
FAMILY_COLOURS = {"full": "#404040", "frozen": "#9a9a9a", "lora": "#1f77b4", "adapter": "#ff7f0e",
                  "prompt": "#2ca02c", "side": "#9467bd", "peft": "#d62728"}
SPARE_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f00", "#005f5f", "#a05000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # the n-th strategy of a family, in line plots


def families_of(runs: pd.DataFrame) -> dict[str, str]:
    """strategy -> registered family (``run.family`` of the result JSON); a strategy without one is its own."""
    pairs = runs[["strategy", "family"]].dropna(subset=["strategy"]).astype("object")
    return {str(s): (str(f) if pd.notna(f) else str(s)) for s, f in pairs.itertuples(index=False)}


def family_colours(families) -> dict[str, tuple]:
    """Family -> RGB: the fixed colour of a known family, else a spare one (alphabetical, cycling)."""
    unknown = sorted({f for f in families if f not in FAMILY_COLOURS})
    spare = {f: SPARE_COLOURS[i % len(SPARE_COLOURS)] for i, f in enumerate(unknown)}
    return {f: matplotlib.colors.to_rgb(FAMILY_COLOURS.get(f) or spare[f]) for f in set(families)}


def _shade(colour: tuple, amount: float) -> tuple:
    """``amount`` < 0 mixes towards black, > 0 towards white."""
    target = np.zeros(3) if amount < 0 else np.ones(3)
    return tuple(float(c) for c in (1 - abs(amount)) * np.asarray(colour) + abs(amount) * target)


def family_members(strategies, families: dict[str, str]) -> dict[str, list[str]]:
    """Family -> its strategies in report order (the family's own name first)."""
    members: dict[str, list[str]] = {}
    for name in strategy_order(strategies):
        members.setdefault(families.get(name, name), []).append(name)
    return members


def palette(strategies, families: dict[str, str] | None = None) -> dict[str, tuple]:
    """strategy -> colour: its family's colour, in shades from darker to lighter when the family has variants.
    Ordered as the report orders strategies, so legends and bars list them the same way everywhere."""
    members = family_members(strategies, families or {})
    base = family_colours(members)
    colours = {}
    for family, names in members.items():
        amounts = np.linspace(-0.3, 0.45, len(names)) if len(names) > 1 else [0.0]
        colours |= {name: _shade(base[family], float(a)) for name, a in zip(names, amounts, strict=True)}
    return {name: colours[name] for name in strategy_order(strategies)}


def family_legend(fig: Figure, strategies, families: dict[str, str], extra: tuple = ()) -> None:
    """One patch per family present (and any ``extra`` handles), below the panels."""
    members = family_members(strategies, families)
    colours = family_colours(members)
    handles = [Patch(color=colours[f], label=f) for f in members] + list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), title="strategy family",
               fontsize=9, title_fontsize=9, frameon=False)


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


def label_format(values) -> str:
    """One format for a panel's bar labels, no exponents: three significant digits for its smallest non-zero
    value, the same decimals for the rest (20.5 and 74.7; 0.237 and 1.077; 426 and 1270), as in the tables."""
    magnitudes = [math.floor(math.log10(abs(v))) for v in values if v and not pd.isna(v)]
    return f".{min(max(2 - min(magnitudes), 0), 4) if magnitudes else 0}f"


def _seed_spread(data: pd.DataFrame, column: str) -> pd.DataFrame:
    """strategy -> mean ± sample std over its rows (seeds; ddof = 1), NaN ends for a single seed."""
    stats = data.groupby("strategy")[column].agg(["mean", "std"])
    return pd.DataFrame({"low": stats["mean"] - stats["std"], "high": stats["mean"] + stats["std"]})


def _bar_panel(ax: Axes, data: pd.DataFrame, column: str, *, xlabel: str, title: str, colours: dict,
               higher_is_better: bool, spread: pd.DataFrame | None = None) -> None:
    """Horizontal bars, best at the top, whiskers from ``spread`` (strategy -> ``low`` / ``high`` in the column's
    unit; default: ± seed std) with the value written past the whisker's end; a dashed line marks ``full`` (the
    reference every ratio is taken to)."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    present = data.dropna(subset=[column])
    if present.empty:
        note(ax, "not measured in these runs")
        return
    means = present.groupby("strategy")[column].mean()
    order = sorted(means.index, key=lambda s: (-means[s] if higher_is_better else means[s], s))
    sns.barplot(data=present, y="strategy", x=column, order=order, hue="strategy", hue_order=order,
                palette=colours, saturation=1.0, errorbar=None, legend=False, orient="h", ax=ax)
    ends = _whiskers(ax, means.reindex(order), (spread if spread is not None else _seed_spread(present, column)))
    fmt = label_format(means)
    for y, (name, end) in enumerate(ends.items()):
        ax.annotate(format(means[name], fmt), (end, y), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=8, bbox=dict(boxstyle="square,pad=0.05", facecolor="white", edgecolor="none", alpha=0.8))
    if "full" in means.index:
        ax.axvline(means["full"], color="0.35", linestyle="--", linewidth=0.8, zorder=0)
    ax.set_ylabel("")
    ax.margins(x=0.15)
    ax.tick_params(axis="y", labelsize=9)


def _whiskers(ax: Axes, means: pd.Series, spread: pd.DataFrame) -> pd.Series:
    """Black whiskers from ``low`` to ``high`` on the bars of ``means`` (in bar order, y = 0, 1, ...); returns where
    each bar's label goes: the whisker's far end, else the bar's end."""
    ends = spread.reindex(means.index)[["low", "high"]].astype("float64")
    drawn = (ends["high"] > ends["low"]).to_numpy()  # NaN (one seed) or no spread (parameter counts): no whisker
    if drawn.any():
        y = np.arange(len(means))[drawn]
        ax.errorbar(means[drawn], y, xerr=[means[drawn] - ends["low"][drawn], ends["high"][drawn] - means[drawn]],
                    fmt="none", ecolor="black", elinewidth=1.1, capsize=3, zorder=4)
    return pd.Series(np.fmax(means.to_numpy(), ends["high"].fillna(means).to_numpy()), index=means.index)


def efficiency_figure(runs: pd.DataFrame, *, f1: str | None, title: str,
                      intervals: pd.DataFrame | None = None) -> Figure:
    """VTFPAR++ Fig. 1 (c-f): memory, F1, step time and tunable parameters per strategy at one setting. Whiskers:
    ± seed std; on the F1 bars of single-seed strategies the bootstrap interval of ``intervals`` (this report's
    statistics.csv, see ``bench/reporting/intervals.py``) instead, the legend naming each kind shown."""
    count = runs["strategy"].nunique()
    fig = Figure(figsize=(13, max(7.5, 2.2 + 0.5 * count)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).ravel()
    families = families_of(runs)
    data, colours = derived(runs, f1), palette(runs["strategy"], families)
    accuracy = _accuracy_spread(aggregate(runs), intervals, f1)
    f1_name = F1_LABELS.get(f1, "F1 (%)")
    panels = (("mem_mib", memory_label(runs), "(c) peak training memory", False),
              ("f1_pct", f1_name, f"(d) test {f1_name[:-4]}", True),
              ("step_ms", STEP_LABEL, "(e) training step time (median)", False),
              ("params_m", PARAMS_LABEL, "(f) tunable parameters", False))
    for ax, (column, xlabel, panel_title, higher) in zip(axes, panels, strict=True):
        _bar_panel(ax, data, column, xlabel=xlabel, title=f"{panel_title}, best at top", colours=colours,
                   higher_is_better=higher, spread=_percent(accuracy) if column == "f1_pct" else None)
    fig.suptitle(title)
    reference = (Line2D([], [], color="0.35", linestyle="--", linewidth=0.8, label="full (reference)"),) \
        if "full" in set(runs["strategy"]) else ()
    family_legend(fig, runs["strategy"], families, extra=reference + _whisker_handles(accuracy, "whiskers"))
    return fig


def _accuracy_spread(groups: pd.DataFrame, intervals: pd.DataFrame | None, f1: str | None) -> pd.DataFrame:
    """``intervals.accuracy_spread`` by strategy; a strategy with rows at several settings gets no whisker."""
    spread = accuracy_spread(groups, intervals, metric=f1)
    return spread.drop_duplicates("strategy", keep=False).set_index("strategy")


def _percent(spread: pd.DataFrame) -> pd.DataFrame:
    return spread.assign(**{key: spread[key].astype("float64") * 100 for key in ("mean", "low", "high")})


def _whisker_handles(spread: pd.DataFrame, what: str) -> tuple:
    """One legend entry per kind of whisker drawn (seed std, bootstrap interval), so a reader knows which is which."""
    return tuple(Line2D([], [], color="black", marker="|", markersize=10, linestyle="-", linewidth=1.1,
                        label=f"{what}: {kind}") for kind in kinds_shown(spread))


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


def pareto_figure(groups: pd.DataFrame, *, f1: str | None, title: str, families: dict[str, str] | None = None,
                  intervals: pd.DataFrame | None = None) -> Figure:
    """F1 vs peak memory per strategy (``aggregate`` rows at one setting); marker area = tunable parameters, error
    bars = the F1 whiskers of ``efficiency_figure`` (``intervals``: this report's statistics.csv).
    ``families`` (strategy -> family, see ``families_of``) colours the markers as in the other figures."""
    fig = Figure(figsize=(10, 7), layout="constrained")
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
    x, y = points[x_column].astype("float64") * scale, points[f"{f1}_mean"].astype("float64") * 100
    largest = _draw_pareto(ax, points, x=x, y=y, families=families or {})
    spread = _percent(accuracy_spread(points, intervals, metric=f1))
    _error_bars(ax, x=x, spread=spread)
    bars = "".join(f"\nerror bars: {kind}" for kind in kinds_shown(spread))
    ax.set_title(f"F1 vs training cost{caveat}\ndashed: Pareto front; marker area ∝ tunable parameters "
                 f"(largest {largest:.3g} M){bars}", fontsize=11)
    family_legend(fig, points["strategy"], families or {})
    fig.canvas.draw()  # lay the figure out, then freeze it, so labels are placed in final pixel positions
    fig.set_layout_engine("none")
    _label_points(ax, points, x=x, y=y)
    return fig


def _error_bars(ax: Axes, *, x: pd.Series, spread: pd.DataFrame) -> None:
    """Vertical bars from ``low`` to ``high`` (percent) through each marker, under it; no caps, so the label
    placement sees only line segments (``labels._line_boxes``)."""
    drawn = spread[["low", "high"]].notna().all(axis=1)
    if drawn.any():
        mean, low, high = (spread.loc[drawn, key] for key in ("mean", "low", "high"))
        ax.errorbar(x[drawn], mean, yerr=[mean - low, high - mean], fmt="none", ecolor="0.2", elinewidth=1.2,
                    capsize=0, zorder=2.5)


def _marker_sizes(points: pd.DataFrame) -> tuple[pd.Series, float]:
    params = points["params_trainable_mean"].astype("float64").fillna(0.0) / 1e6
    largest = max(float(params.max()), 1e-12)
    return 60 + 940 * params / largest, largest


def _draw_pareto(ax: Axes, points: pd.DataFrame, *, x: pd.Series, y: pd.Series, families: dict[str, str]) -> float:
    """Markers and the Pareto staircase; returns the largest tunable parameter count (M), for the legend."""
    sizes, largest = _marker_sizes(points)
    colours = palette(points["strategy"], families)
    ax.scatter(x, y, s=sizes, c=[colours[s] for s in points["strategy"]], alpha=0.8, edgecolors="black",
               linewidths=0.6, zorder=3)
    front = pareto_front(list(x), list(y))
    front_x = [x.iloc[i] for i in front] + [float(x.max())]  # the last level holds up to the costliest point
    front_y = [y.iloc[i] for i in front] + [y.iloc[front[-1]]]
    ax.plot(front_x, front_y, drawstyle="steps-post", color="0.4", linestyle="--", zorder=2)
    ax.margins(0.12)
    return largest


def _label_points(ax: Axes, points: pd.DataFrame, *, x: pd.Series, y: pd.Series) -> None:
    """Name every marker (with its tunable parameters) where no other label, marker or line is in the way."""
    sizes, _ = _marker_sizes(points)
    params = points["params_trainable_mean"].astype("float64") / 1e6
    texts = [f"{name} ({p:.3g} M)" if pd.notna(p) else str(name) for name, p in zip(points["strategy"], params,
                                                                                    strict=True)]
    radii_px = [float(np.sqrt(s)) / 2 * DPI / 72 for s in sizes]  # scatter size is an area in points^2
    place_labels(ax, list(zip(x, y, strict=True)), texts, radii_px=radii_px, fontsize=9)


def _cost_panel(ax: Axes, data: pd.DataFrame, *, y: str, x: str, fixed: str, colours: dict,
                markers: dict[str, str]) -> bool:
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
                 style="strategy", style_order=order, markers={s: markers[s] for s in order}, dashes=False,
                 errorbar="sd", err_style="bars", legend=False, ax=ax)
    ax.set_xticks(values)
    return True


def cost_curves_figure(runs: pd.DataFrame, *, reference: dict | None, title: str) -> Figure:
    """2 x 2: (peak memory, step time) x (vs frames at the reference batch, vs batch at the reference frames)."""
    fig = Figure(figsize=(14, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).ravel()
    families = families_of(runs)
    data, colours = derived(runs, None), palette(runs["strategy"], families)
    markers = family_markers(runs["strategy"], families)
    drawn_any = False
    for ax, (y, y_label, x, x_label) in zip(axes, COST_PANELS, strict=True):
        ax.set_xlabel(x_label)
        ax.set_ylabel(memory_label(runs) if y == "mem_mib" else y_label)
        subset, fixed = _cost_subset(runs, data, x=x, reference=reference)
        ax.set_title(f"{y_label.split(' (')[0]} vs {x_label.split(' (')[0]}{fixed}")
        drawn_any |= _cost_panel(ax, subset, y=y, x=x, fixed=fixed, colours=colours, markers=markers)
    if drawn_any:
        handles = [Line2D([], [], color=colours[s], marker=markers[s], label=s) for s in colours]
        fig.legend(handles=handles, loc="outside right upper", title="strategy", fontsize=9, title_fontsize=9)
    fig.suptitle(title)
    return fig


def family_markers(strategies, families: dict[str, str]) -> dict[str, str]:
    """The n-th strategy of every family gets the n-th marker: variants of one colour stay apart."""
    return {name: MARKERS[i % len(MARKERS)] for names in family_members(strategies, families).values()
            for i, name in enumerate(names)}


COST_PANELS = (("mem_mib", MEM_LABEL, "frames", "frames per clip"), ("mem_mib", MEM_LABEL, "batch_size",
                                                                       "batch size (clips)"),
               ("step_ms", STEP_LABEL, "frames", "frames per clip"), ("step_ms", STEP_LABEL, "batch_size",
                                                                      "batch size (clips)"))


def _cost_subset(runs: pd.DataFrame, data: pd.DataFrame, *, x: str, reference: dict | None
                 ) -> tuple[pd.DataFrame, str]:
    """Rows varying only ``x`` (same dataset and backbone as the reference setting), the other sweep axis held at
    the value under which ``x`` takes the most values: a frames sweep at batch 16 and a batch sweep at 2 frames,
    written to one folder, give both curves. Ties go to the reference setting's value, then the larger one."""
    if reference is None:
        return data.iloc[0:0], ""
    other = "batch_size" if x == "frames" else "frames"
    same = select_setting(runs, {key: reference[key] for key in ("dataset", "backbone", "precision", "switches")})
    spread = same.groupby(same[other].astype("object"), dropna=False)[x].nunique()
    held = max(spread.items(), key=lambda item: (item[1], item[0] == reference[other], sort_number(item[0])))[0]
    chosen = select_setting(same, {other: held})
    fixed = f" (batch {held})" if other == "batch_size" else f" ({held} frames)"
    return data.loc[chosen.index], fixed


def save_figure(fig: Figure, path: Path) -> Path:
    """PNG at a fixed DPI; the same data gives the same bytes."""
    return write_atomic(path, lambda handle: fig.savefig(handle, dpi=DPI, format=Path(path).suffix[1:]), binary=True)
