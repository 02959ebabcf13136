"""Training curves: how each strategy got to its score, from the per-epoch history every run records.

A run's result JSON keeps, per epoch, the mean training loss over the epoch's steps, the validation metric that picks
the checkpoint (``val_<select_metric>``, macro-F1 by default) and the seconds since training began (``metrics.history``,
written by ``bench/training/run.py``), and the epoch whose weights were kept (``metrics.best_epoch``).
``training_curves.png`` draws them per setting (``tables.SETTING``: runs at other frames, batch sizes or precisions are
never on one axis), one row of two panels per setting: training loss and validation metric against the epoch. One line
per strategy in the colours of every other figure (``plots.palette``); with several seeds the line is the mean over
seeds and the band ± sample std; a star marks each run's chosen epoch at that run's own value. A curve still rising at
the last epoch says the schedule was too short for that strategy; a chosen epoch before the last says it overfitted.
"""
from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.records import dig
from bench.records import row as record_row
from bench.reporting import plots
from bench.reporting.tables import COLUMNS, SETTING, _setting_text

HISTORY_COLUMNS = {"run_id": "string", "strategy": "string", "family": "string", **{k: COLUMNS[k][0] for k in SETTING},
                   "seed": "Int64", "epoch": "Int64", "train_loss": "float64", "val_metric": "string",
                   "val_value": "float64", "elapsed_s": "float64", "chosen": "boolean"}
METRIC_NAMES = {"macro_f1": "macro-F1", "paper_f1": "paper-F1", "mA": "mA"}
LOSS_LABEL = "training loss (mean over the epoch's steps)"
CHOSEN = dict(marker="*", s=140, edgecolors="black", linewidths=0.6, zorder=5)


def history_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (successful run, epoch): setting, strategy, seed, ``train_loss``, ``val_metric`` (its name)
    and ``val_value`` (a fraction), ``elapsed_s``, and ``chosen`` (the epoch whose weights the run kept)."""
    rows = []
    for record in records:
        flat = record_row(record)
        if flat["status"] != "ok":
            continue
        base = {key: flat[key] for key in ("run_id", "strategy", "family", *SETTING, "seed")}
        best = dig(record, "metrics", "best_epoch")
        rows += [{**base, **_epoch_row(entry, best)} for entry in dig(record, "metrics", "history") or []]
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)).astype(HISTORY_COLUMNS)


def _epoch_row(entry: dict, best) -> dict:
    """One history entry; its validation key is ``val_<select_metric>``, whichever metric the run selected by."""
    metric = next((key for key in entry if key.startswith("val_")), None)
    return {"epoch": entry.get("epoch"), "train_loss": entry.get("train_loss"),
            "val_metric": metric.removeprefix("val_") if metric else None,
            "val_value": entry.get(metric) if metric else None, "elapsed_s": entry.get("elapsed_s"),
            "chosen": best is not None and entry.get("epoch") == best}


def settings_of(history: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """(setting, its rows) in the order of the setting's values (frames, batch size, ... ascending)."""
    groups = history.groupby([history[k].astype("object") for k in SETTING], dropna=False, sort=True)
    return [(dict(zip(SETTING, values, strict=True)), part) for values, part in groups]


def curves_figure(history: pd.DataFrame, *, title: str, families: dict[str, str]) -> Figure:
    """One row per setting (a subfigure titled with it): training loss and validation metric (%) vs epoch, one line
    per strategy."""
    settings = settings_of(history)
    fig = Figure(figsize=(14, 1.2 + 4.0 * max(len(settings), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    if not settings:
        plots.note(fig.subplots(), "no run recorded a per-epoch history\n(profile-only runs train no epochs)")
        return fig
    colours = plots.palette(history["strategy"], families)
    markers = plots.family_markers(history["strategy"], families)
    for row, (setting, part) in zip(fig.subfigures(len(settings), 1, squeeze=False)[:, 0], settings, strict=True):
        loss_ax, val_ax = row.subplots(1, 2)
        row.suptitle(_setting_text(setting), fontsize=11)
        curve_panel(loss_ax, part, y="train_loss", colours=colours, markers=markers)
        curve_panel(val_ax, part.assign(val_pct=part["val_value"] * 100), y="val_pct", colours=colours,
                    markers=markers)
        loss_ax.set(ylabel=LOSS_LABEL, title="training loss")
        val_ax.set(ylabel=f"validation {_metric_names(part)} (%)", title="validation metric (chooses the epoch)")
    seeded = bool(history.groupby(["strategy", *SETTING], dropna=False)["run_id"].nunique().gt(1).any())
    _legend(fig, colours, markers, seeded=seeded)
    return fig


def _metric_names(part: pd.DataFrame) -> str:
    return " / ".join(METRIC_NAMES.get(m, m) for m in sorted(set(part["val_metric"].dropna()))) or "metric"


def curve_panel(ax: Axes, part: pd.DataFrame, *, y: str, colours: dict, markers: dict) -> list[str]:
    """Mean over seeds per strategy and epoch (band: ± sample std where there are several seeds), a star on each
    run's chosen epoch. Returns the strategies drawn, in the order of their lines (``ax.get_lines()``)."""
    data = part.dropna(subset=[y]).astype({"epoch": "float64", y: "float64"})
    order = [s for s in colours if s in set(data["strategy"])]
    if not order:
        plots.note(ax, "not recorded in these runs")
        return []
    sns.lineplot(data=data, x="epoch", y=y, hue="strategy", hue_order=order, palette=colours, style="strategy",
                 style_order=order, markers={s: markers[s] for s in order}, dashes=False, markersize=5,
                 errorbar="sd", legend=False, ax=ax)
    chosen = data[data["chosen"].fillna(False)]
    if len(chosen):
        ax.scatter(chosen["epoch"], chosen[y], c=[colours[s] for s in chosen["strategy"]], **CHOSEN)
    ax.set_xlabel("epoch")
    ax.set_xticks(sorted(data["epoch"].unique()))
    return order


def _legend(fig: Figure, colours: dict, markers: dict, *, seeded: bool) -> None:
    """Strategies (family colour, variant marker), what the star and the band mean, right of the panels."""
    handles = [Line2D([], [], color=colours[s], marker=markers[s], label=s) for s in colours]
    handles.append(Line2D([], [], color="white", marker="*", markersize=12, markeredgecolor="black",
                          markerfacecolor="0.6", label="chosen epoch (best validation)"))
    if seeded:
        handles.append(Patch(color="0.8", label="band: ± sample std over seeds\n(line: mean over seeds)"))
    fig.legend(handles=handles, loc="outside right upper", title="strategy", fontsize=9, title_fontsize=9)
