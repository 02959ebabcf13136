"""``explore.html``: every successful run of the report as one point, any two measured columns on the axes.

The static figures answer the questions asked before the sweep (F1 vs memory at the reference setting); this page
answers the next ones: accuracy vs FLOPs, per-kind F1 vs tunable parameters, one precision or one seed only. One
self-contained file that opens offline: plotly.js is inlined (``include_plotlyjs=True``), the runs are embedded as
JSON (``<script id="explore-data">``, one entry per run, values in the units of the axis labels), and the controls
(axes, log scale, filters by family, setting, precision and seed) are plain HTML read by a short script
(``explore.js`` beside this file) that redraws through ``Plotly.react`` and recomputes the Pareto front of the points
shown, each axis better in the direction of its column (``tables.COLUMNS``). Hovering a point shows its run id,
strategy, setting, seed and the configuration values that set it apart from the other runs.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from bench.records import dig, write_atomic
from bench.reporting import index, plots
from bench.reporting.tables import COLUMNS, SETTING, _setting_text, headline_f1, sort_runs, to_frame
from data.schema import KINDS

NAME = "explore.html"
SCRIPT = Path(__file__).with_name("explore.js")
MIB = 2**20
AXES = {  # column -> (label with unit, scale from the stored unit); offered where any run has a value
    "paper_f1": ("test paper-F1 (%)", 100.0), "macro_f1": ("test macro-F1 (%)", 100.0), "mA": ("test mA (%)", 100.0),
    **{f"macro_f1_{kind}": (f"test macro-F1, {kind} attributes (%)", 100.0) for kind in KINDS},
    "peak_mem_bytes": ("peak training memory (MiB)", 1 / MIB),
    "step_time_ms_median": ("training step time, median (ms)", 1.0),
    "throughput_clips_per_s": ("training throughput (clips/s)", 1.0),
    "train_step_flops": ("training-step GFLOPs (forward + backward)", 1e-9),
    "fwd_flops_per_clip": ("forward GFLOPs per clip", 1e-9),
    "params_trainable": ("tunable parameters (M)", 1e-6), "params_added": ("added parameters (M)", 1e-6),
    "train_time_s": ("training time (s)", 1.0),
}
ARROWS = {"higher": "↑", "lower": "↓", None: ""}
SYMBOLS = dict(zip(plots.MARKERS, ("circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x"),
                   strict=True))  # matplotlib marker of the line plots -> plotly symbol
MAX_HOVER_KEYS = 12
SHOWN_KEYS = ("strategy.name", "strategy.family", "data.dataset", "model.backbone", "data.frames", "train.batch_size",
              "train.world_size", "train.precision", "train.seed")  # already in the hover's first lines


def _hex(colour: tuple) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in colour)


def offered_columns(frame: pd.DataFrame) -> dict[str, dict]:
    """Axis columns with at least one value: label, better direction and its arrow."""
    return {column: {"label": label, "better": COLUMNS[column][1], "arrow": ARROWS[COLUMNS[column][1]]}
            for column, (label, _) in AXES.items() if frame[column].notna().any()}


def _flat_config(record: dict) -> dict[str, str]:
    return {key: str(value) for key, value in index._flat(dig(record, "run", "config") or {}).items()}


def _varying_keys(configs: list[dict[str, str]]) -> list[str]:
    """Configuration keys whose value differs between the runs (strategy options, learning rate, ...), but for those
    the hover states anyway (strategy, setting, seed)."""
    keys = sorted({key for config in configs for key in config})
    return [key for key in keys if key not in SHOWN_KEYS and len({config.get(key) for config in configs}) > 1]


def hover_text(row: pd.Series, config: dict[str, str], varying: list[str]) -> str:
    """What a point is: run id, strategy (family), setting, seed, and the configuration values that vary."""
    esc = html.escape
    lines = [f"<b>{esc(str(row['run_id']))}</b>", f"{esc(str(row['strategy']))} ({esc(str(row['family']))})",
             esc(_setting_text({key: row[key] for key in SETTING})), f"seed {row['seed']}"]
    shown = [key for key in varying if key in config][:MAX_HOVER_KEYS]
    lines += [f"{esc(key)} = {esc(config[key])}" for key in shown]
    return "<br>".join(lines)


def run_entries(ok: list[dict], columns: dict[str, dict]) -> list[dict]:
    """One entry per successful run (``ok``), in report order: filter fields, hover text, axis values (null =
    missing)."""
    frame = sort_runs(to_frame(ok).assign(record=range(len(ok))))
    families = plots.families_of(frame)
    configs = [_flat_config(r) for r in ok]
    varying = _varying_keys(configs)
    entries = []
    for _, row in frame.iterrows():
        values = {c: (None if pd.isna(row[c]) else float(row[c]) * AXES[c][1]) for c in columns}
        entries.append({"run_id": str(row["run_id"]), "strategy": str(row["strategy"]),
                        "family": families[str(row["strategy"])],
                        "setting": _setting_text({key: row[key] for key in SETTING}),
                        "precision": str(row["precision"]), "seed": "-" if pd.isna(row["seed"]) else str(row["seed"]),
                        "hover": hover_text(row, configs[int(row["record"])], varying), "values": values})
    return entries


def strategy_styles(frame: pd.DataFrame) -> list[dict]:
    """Colour (the family's, as in every figure) and marker symbol per strategy, in report order."""
    families = plots.families_of(frame)
    colours = plots.palette(frame["strategy"], families)
    markers = plots.family_markers(frame["strategy"], families)
    return [{"name": name, "family": families.get(name, name), "colour": _hex(colours[name]),
             "symbol": SYMBOLS[markers[name]]} for name in colours]


def successful(records: list[dict]) -> list[dict]:
    """The runs that have a point: failed runs have neither metrics nor profile."""
    return [record for record in records if (record.get("run") or {}).get("status") == "ok"]


def page_data(records: list[dict]) -> dict:
    """Everything the page's script needs: axis columns, strategy styles, runs."""
    ok = successful(records)
    frame = to_frame(ok)
    columns = offered_columns(frame)
    return {"columns": columns, "strategies": strategy_styles(frame), "runs": run_entries(ok, columns)}


def default_axes(columns: dict[str, dict], frame: pd.DataFrame) -> tuple[str, str]:
    """What pareto.png shows: headline F1 against peak memory (step time where memory was not measured)."""
    names = list(columns) or list(AXES)
    x = next((c for c in ("peak_mem_bytes", "step_time_ms_median") if c in columns), names[0])
    y = headline_f1(frame) if headline_f1(frame) in columns else names[-1]
    return x, y


def _select(element: str, columns: dict[str, dict], chosen: str) -> str:
    options = "".join(f'<option value="{c}"{" selected" if c == chosen else ""}>{html.escape(spec["label"])} '
                      f'{spec["arrow"]}</option>' for c, spec in columns.items())
    return f'<label>{element[0]}: <select id="{element}">{options}</select></label>'


def _checkboxes(name: str, values: list[str]) -> str:
    boxes = "".join(f'<label><input type="checkbox" name="{name}" value="{html.escape(v, quote=True)}" checked>'
                    f"{html.escape(v)}</label>" for v in values)
    return f"<fieldset><legend>{name}</legend>{boxes}</fieldset>"


def controls(data: dict, frame: pd.DataFrame) -> str:
    """Axis pickers, log switches and one tick box per family, setting, precision and seed (all ticked)."""
    x, y = default_axes(data["columns"], frame)
    runs = data["runs"]
    filters = [_checkboxes(name, list(dict.fromkeys(run[name] for run in runs)))
               for name in ("family", "setting", "precision", "seed")]
    return ('<div class="controls"><div>' + _select("x-axis", data["columns"], x)
            + '<label><input type="checkbox" id="x-log">log x</label>' + _select("y-axis", data["columns"], y)
            + '<label><input type="checkbox" id="y-log">log y</label></div>' + "".join(filters) + "</div>")


STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:1.5em auto;padding:0 1em;color:#222}"
         ".controls label{margin-right:1em;white-space:nowrap}.controls select{max-width:22em}"
         "fieldset{display:inline-block;vertical-align:top;border:1px solid #ccc;margin:0.4em 0.4em 0 0;"
         "max-height:9em;overflow:auto}fieldset label{display:block}#shown{color:#555}")


def plot_div() -> str:
    """The plotly figure (layout only: the page's script adds the traces), with plotly.js inlined."""
    layout = go.Layout(template="plotly_white", height=720, hovermode="closest", margin=dict(l=70, r=20, t=20, b=60),
                       legend=dict(title=dict(text="strategy")))
    start = "Explore.start(document.getElementById('{plot_id}'));"
    return pio.to_html(go.Figure(layout=layout), include_plotlyjs=True, full_html=False, div_id="explore-plot",
                       config={"displaylogo": False}, post_script=start)


def explore_html(records: list[dict], *, source: str) -> str:
    """The whole page: intro, controls, the embedded runs, the page's script, the plot."""
    data = page_data(records)
    frame = to_frame(successful(records))
    embedded = json.dumps(data, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    esc = html.escape
    return "\n".join([
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Explore: {esc(source)}</title>'
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Explore the runs of <code>{esc(source)}</code></h1>",
        "<p>Generated by <code>python -m bench.reporting.report</code> from the result JSONs: regenerate, do not edit. "
        "One point per successful run; pick the axes, untick what to hide; hover a point for its run id and "
        "configuration. The dashed line is the Pareto front of the points shown (↑ / ↓: higher / lower is better). "
        'Back to the report: <a href="index.html">index.html</a>.</p>',
        controls(data, frame), '<p id="shown"></p>',
        f'<script type="application/json" id="explore-data">{embedded}</script>',
        f"<script>{SCRIPT.read_text(encoding='utf-8')}</script>", plot_div(), "</body></html>\n"])


def write_explore(out: Path, records: list[dict], *, source: str) -> Path:
    """``out/explore.html`` (about 5 MB, almost all of it plotly.js)."""
    text = explore_html(records, source=source)
    return write_atomic(Path(out) / NAME, lambda handle: handle.write(text))
