"""The report's front page, one page to open first: ``README.md`` (rendered by GitHub and most code hosts) and
``index.html`` (opens offline in any browser; figures inline through relative paths, no script, no network).

Both show the same four things, generated from the result JSONs like every other report file: the setting the runs
were measured in (every configuration value, and which ones vary), the figures (and a link to the interactive
``explore.html``), the main table (``summary.md``'s aggregated table) and a link to every other file of the report
folder with one line on what it holds.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.measure import statistics
from bench.records import dig, write_atomic
from bench.reporting import tables

INDEX_FILES = ("README.md", "index.html")
FIGURES = {  # file -> caption; drawn in this order
    "fig1_efficiency.png": "VTFPAR++ Fig. 1 (c-f): peak training memory, test F1, step time and tunable parameters "
                           "per strategy at the reference setting, sorted best first; colours = strategy family. "
                           "Whiskers: ± sample std over seeds where a strategy has two or more seeds; on the F1 bars "
                           f"of a single-seed strategy, the {100 * statistics.LEVEL:g} % bootstrap interval over test "
                           "clips of statistics.md instead (the legend names the kinds shown).",
    "pareto.png": "F1 vs peak training memory, marker area = tunable parameters; the dashed staircase is the Pareto "
                  "front (no other strategy uses less memory and reaches a higher F1). Error bars: the F1 whiskers "
                  "of Fig. 1 (d), seed std or bootstrap interval as the legend says.",
    "cost_curves.png": "Peak training memory and step time vs frames per clip and vs batch size.",
    "training_curves.png": "Training loss and validation metric per epoch, one row per setting, one line per "
                           "strategy in its family's colour; with several seeds the line is the mean and the band "
                           "± sample std over seeds; a star marks each run's chosen epoch (best validation).",
}
EXPLORER = ("explore.html", "Interactive explorer (opens offline): any two columns on the axes (accuracy, per-kind "
            "F1, memory, step time, FLOPs, parameters), filters by family, setting, precision and seed, run id and "
            "configuration on hover, the Pareto front of the points shown.")
FILE_NOTES = {
    "summary.md": "provenance, column legend, the aggregated table, failed runs",
    "summary.csv": "one row per run, every column (definitions in results/README.md)",
    "summary.tex": "the aggregated table as a LaTeX booktabs tabular",
    "per_attribute_f1.md": "VTF Table 2 layout: test F1 per attribute group and per one-hot column",
    "per_attribute_f1.csv": "per one-hot column F1 (fractions)",
    "per_group_f1.csv": "per attribute group F1 (fractions)",
    "per_kind_f1.md": "test macro-F1 per kind of attribute (appearance, spatial, temporal), mean ± std over seeds",
    "frames_ablation.md": "VTF Table 3 layout: test F1 vs frames per clip",
    "frames_ablation.csv": "the numbers behind the frames ablation (mean and std over seeds, fractions)",
    "compare.md": "this folder beside another one (written by python -m bench.reporting.compare)",
    "compare.csv": "the numbers behind compare.md",
    "fig1_efficiency.png": "figure: memory, F1, step time, tunable parameters per strategy (VTFPAR++ Fig. 1 c-f)",
    "pareto.png": "figure: F1 vs peak training memory with the Pareto front",
    "cost_curves.png": "figure: peak memory and step time vs frames and vs batch size",
    "training_curves.png": "figure: training loss and validation metric per epoch, per setting",
    "explore.html": "interactive plot of every run: any two columns, filters, Pareto front of what is shown",
    "statistics.md": "bootstrap confidence intervals and paired comparisons between strategies",
    "tuning.md": "what --tune chose per strategy on the validation split, its cost, the ranking before and after",
    "statistics.csv": "the intervals per strategy, setting and metric (fractions)",
    "paired_comparisons.csv": "every paired difference between strategies with its interval",
}
SKIPPED_KEYS = ("strategy.",)  # per-row facts, shown in the table, not part of the setting


def _flat(mapping: dict, prefix: str = "") -> dict[str, object]:
    """Nested config -> dotted keys (``train.batch_size``)."""
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def setting_rows(records: list[dict]) -> list[tuple[str, str]]:
    """(key, value) for the environment and every configuration value of the runs; a value that differs
    between runs lists every value seen (seed, frames, batch size in a sweep)."""
    seen: dict[str, set[str]] = {}
    for record in records:
        env = record.get("environment") or {}
        facts = {"device": env.get("gpu") or env.get("cpu"), "torch": env.get("torch"), "cuda": env.get("cuda")}
        facts |= {f"config.{k}": v for k, v in _flat(dig(record, "run", "config") or {}).items()}
        for key, value in facts.items():
            if not any(key.startswith(f"config.{s}") for s in SKIPPED_KEYS):
                seen.setdefault(key, set()).add("-" if value is None else str(value))
    return [(key, ", ".join(sorted(values, key=_natural))) for key, values in seen.items()]


def _natural(text: str) -> tuple:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _run_counts(frame: pd.DataFrame) -> str:
    ok = frame["status"] == "ok"
    profile_only = ok & frame["paper_f1"].isna() & frame["macro_f1"].isna()
    return (f"{len(frame)} runs: {int(ok.sum())} ok ({int(profile_only.sum())} profile-only), "
            f"{int((~ok).sum())} failed; {frame['strategy'].nunique()} strategies")


def _reference_text(frame: pd.DataFrame) -> str:
    setting = tables.reference_setting(frame)
    if not setting:
        return "No successful run: figures and tables are empty."
    return (f"Figures with one setting show the reference setting (the one with the most strategies): "
            f"{tables._setting_text(setting)}.")


def other_files(out: Path) -> list[str]:
    """Every file of the folder but the front pages and hidden files (the report's manifest)."""
    return sorted(p.name for p in out.iterdir() if p.is_file() and p.name not in INDEX_FILES
                  and not p.name.startswith("."))


def index_markdown(frame: pd.DataFrame, agg: pd.DataFrame, records: list[dict], *, source: str,
                   files: list[str]) -> str:
    rows = setting_rows(records)
    lines = [f"# Benchmark report: `{source}`", "",
             f"Generated by `python -m bench.reporting.report` from the result JSONs in `{source}`: regenerate, do not "
             f"edit. {_run_counts(frame)}. {_reference_text(frame)}", "",
             "## Results", "", "Mean ± sample std over seeds; ↑ / ↓ = higher / lower is better; column legend in "
             "[summary.md](summary.md), definitions in the project's results/README.md.", "",
             tables.results_markdown(agg), "", "## Figures", ""]
    if EXPLORER[0] in files:
        lines += [f"[{EXPLORER[0]}]({EXPLORER[0]}): {EXPLORER[1]}", ""]
    for name, caption in FIGURES.items():
        if name in files:
            lines += [f"### [{name}]({name})", "", caption, "", f"![{name}]({name})", ""]
    lines += ["## Files", "", *[f"- [{name}]({name}) -- {FILE_NOTES.get(name, 'other file')}" for name in files], "",
              "## Setting", "", "Every value the runs were configured and measured with; a value that differs "
              "between runs lists all of them.", "",
              tabulate([(f"`{k}`", v.replace("|", "\\|")) for k, v in rows], headers=["key", "value"],
                       tablefmt="github", disable_numparse=True), ""]
    return "\n".join(lines)


STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
         ".results td{text-align:right}.results td:first-child{text-align:left}"
         "img{max-width:100%;border:1px solid #eee}"
         "code{background:#f4f4f4;padding:0 3px}")


def index_html(frame: pd.DataFrame, agg: pd.DataFrame, records: list[dict], *, source: str,
               files: list[str]) -> str:
    esc = html.escape
    view = tables.summary_view(agg, arrows=True)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Benchmark report: "
             f"{esc(source)}</title><style>{STYLE}</style></head><body>",
             f"<h1>Benchmark report: <code>{esc(source)}</code></h1>",
             "<p>Generated by <code>python -m bench.reporting.report</code> from the result JSONs in "
             f"<code>{esc(source)}</code>: regenerate, do not edit. {esc(_run_counts(frame))}. "
             f"{esc(_reference_text(frame))}</p>",
             "<h2>Results</h2><p>Mean ± sample std over seeds; ↑ / ↓ = higher / lower is better; column legend in "
             "<a href=\"summary.md\">summary.md</a>.</p>",
             "<div class=\"results\">", tabulate(view, headers="keys", tablefmt="html", showindex=False,
                                                   disable_numparse=True), "</div>",
             "<h2>Figures</h2>"]
    if EXPLORER[0] in files:
        parts.append(f"<p><a href=\"{EXPLORER[0]}\">{EXPLORER[0]}</a>: {esc(EXPLORER[1])}</p>")
    for name, caption in FIGURES.items():
        if name in files:
            parts.append(f"<h3><a href=\"{esc(name)}\">{esc(name)}</a></h3><p>{esc(caption)}</p>"
                         f"<img src=\"{esc(name)}\" alt=\"{esc(name)}\">")
    parts.append("<h2>Files</h2><ul>")
    parts += [f"<li><a href=\"{esc(name)}\">{esc(name)}</a> &ndash; {esc(FILE_NOTES.get(name, 'other file'))}</li>"
              for name in files]
    parts.append("</ul><h2>Setting</h2><p>Every value the runs were configured and measured with; a value that "
                 "differs between runs lists all of them.</p>")
    parts.append(tabulate([(k, v) for k, v in setting_rows(records)], headers=["key", "value"], tablefmt="html",
                          disable_numparse=True))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_index(out: Path, *, frame: pd.DataFrame, agg: pd.DataFrame, records: list[dict], source: str,
                also: list[str] = ()) -> list[Path]:
    """README.md and index.html of a report folder; written last, so they list every file already there and the
    files ``also`` named (others' files the report folder keeps, such as compare.md)."""
    files = sorted({*other_files(out), *(name for name in also if name not in INDEX_FILES)})
    pages = {"README.md": index_markdown(frame, agg, records, source=source, files=files),
             "index.html": index_html(frame, agg, records, source=source, files=files)}
    written = []
    for name, text in pages.items():
        written.append(write_atomic(out / name, lambda handle, text=text: handle.write(text)))
    return written
