"""A report folder generated from result JSONs: ``python -m bench.reporting.report FOLDER`` rebuilds it from the JSONs
alone.

The tables and the statistics come from ``bench/reporting/tables.py`` (summary, VTF Tables 2 and 3, memory breakdown,
bootstrap statistics), the figures from ``bench/reporting/plots.py`` (``fig1_efficiency.png``, ``pareto.png``,
``cost_curves.png``; F1 whiskers by ``bench/reporting/intervals.py``) and ``bench/reporting/curves.py``
(``training_curves.png``), the interactive ``explore.html`` from ``bench/reporting/explore.py``, the front page
(``README.md``, ``index.html``) from ``bench/reporting/index.py``. This module only
puts them together; the table functions are re-exported here, so ``bench.reporting.report`` stays the one name for
reporting.

The report is written aside and swapped in whole, and only over files the report itself wrote and nobody changed
since (``bench/reporting/publish.py``): any other file in the report folder is kept, and one the report would write
over ends it in one line (exit 2) before anything is replaced.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bench.boundary import ensure_writable_folder, entry_point
from bench.reporting import breakdown, index, intervals, publish, tuning_table
from bench.reporting.tables import *  # noqa: F401,F403  (the tables' public names, as bench.reporting.report.*)
from bench.reporting.tables import (  # noqa: F401  (used here, and by callers as bench.reporting.report.*)
    ReportError,
    _setting_text,
    _write_csv,
    _write_text,
    aggregate,
    headline_f1,
    reference_setting,
    scan_folder,
    select_setting,
    sort_runs,
    to_frame,
    write_tables,
)


def _joined(frame: pd.DataFrame, column: str, missing: str) -> str:
    return ", ".join(sorted({str(v) for v in frame[column].dropna()})) or missing


def figure_title(frame: pd.DataFrame, setting: dict | None) -> str:
    """Device (GPU name, else CPU model) and backbone of the runs shown, so a figure is never read out of context."""
    if not setting:
        return f"{_joined(frame, 'device', 'unknown device')} | no successful run"
    runs = select_setting(frame, setting)
    return (f"{_joined(runs, 'device', 'unknown device')} | backbone {setting['backbone']} | {setting['dataset']}, "
            f"{setting['frames']} frames, batch {setting['batch_size']}, {setting['precision']}")


def write_figures(frame: pd.DataFrame, agg: pd.DataFrame, out: Path, *, records: list[dict],
                  intervals: pd.DataFrame | None = None) -> list[Path]:
    """The PNG figures; ``intervals`` (this report's statistics.csv) gives single-seed F1 whiskers."""
    from bench.reporting import curves, plots  # matplotlib is imported only when figures are drawn

    ok = frame[frame["status"] == "ok"]
    setting = reference_setting(frame)
    runs = select_setting(ok, setting) if setting else ok
    groups = select_setting(agg, setting) if setting else agg
    f1, title = headline_f1(frame), figure_title(frame, setting)
    cost_title = (f"{_joined(ok, 'device', 'unknown device')} | backbone {_joined(ok, 'backbone', '-')} | "
                  f"{_joined(ok, 'dataset', '-')}")
    families = plots.families_of(ok)
    return [plots.save_figure(plots.efficiency_figure(runs, f1=f1, title=title, intervals=intervals),
                              out / "fig1_efficiency.png"),
            plots.save_figure(plots.pareto_figure(groups, f1=f1, title=title, families=families, intervals=intervals),
                              out / "pareto.png"),
            plots.save_figure(plots.cost_curves_figure(ok, reference=setting, title=cost_title),
                              out / "cost_curves.png"),
            plots.save_figure(curves.curves_figure(curves.history_frame(records), title=cost_title, families=families),
                              out / "training_curves.png")]


def write_reports(folder: Path, out: Path | None = None, *, explore: bool = True) -> list[Path]:
    """Rebuild every report file of a result folder from its JSONs alone and put them in ``out`` as a whole
    (default ``FOLDER/report``); returns the files written, at their place in ``out``. ``explore``: also the
    offline explorer page (about 5 MB: it inlines plotly.js)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: not a folder (expected the --out folder of a sweep)")
    scan = scan_folder(folder)
    for message in scan.unreadable + scan.duplicates:
        print(f"warning: skipped {message}")
    if not scan.records and not scan.failed_attempts:
        raise ReportError(f"{folder}: no readable result JSON (*.json) found")
    out = check_report_folder(Path(out) if out is not None else folder / "report")
    frame = sort_runs(to_frame(scan.records))
    agg = aggregate(frame)
    with publish.staging(out) as stage:
        written = write_contents(frame, agg, scan, stage, source=folder.name, explore=explore)
        written += write_tuning(folder, frame, stage)
        owned = publish.owned_files(out, [*(p.name for p in written), *index.INDEX_FILES])
        written += write_index(stage, frame=frame, agg=agg, records=scan.records, source=folder.name,
                               also=publish.others_files(out, owned))
        publish.replace_report(stage, out, [p.name for p in written], owned)
    return [out / p.name for p in written]


def write_contents(frame: pd.DataFrame, agg: pd.DataFrame, scan, out: Path, *, source: str, explore: bool = True
                   ) -> list[Path]:
    """Every report file but the front page: tables, memory breakdown, figures (their F1 whiskers from the
    statistics file just written), the explorer page (unless ``explore`` is False)."""
    written = write_tables(frame, agg, scan, out, source=source) + write_breakdown(frame, scan, out)
    written += write_figures(frame, agg, out, records=scan.records,
                             intervals=intervals.read_intervals(out / "statistics.csv"))
    if not explore:
        return written
    from bench.reporting import explore as explorer  # plotly is imported only when the page is written

    return written + [explorer.write_explore(out, scan.records, source=source)]


def write_tuning(folder: Path, frame: pd.DataFrame, out: Path) -> list[Path]:
    """tuning.md when the sweep was run with --tune (bench/reporting/tuning_table.py)."""
    document = tuning_table.read_tuning(folder)
    return [] if document is None else [_write_text(out / "tuning.md", tuning_table.tuning_markdown(document, frame))]


def check_report_folder(out: Path) -> Path:
    """Before any work: ``out`` is a writable folder whose front pages, if any, are the report's own; the other
    files are checked once the report knows their names."""
    out = ensure_writable_folder(out)
    publish.refuse_foreign(out, index.INDEX_FILES, publish.owned_files(out, index.INDEX_FILES))
    return out


def write_breakdown(frame: pd.DataFrame, scan, out: Path) -> list[Path]:
    """memory_breakdown.{md,csv}: peak memory by category and saved activations by module
    (bench/reporting/breakdown.py)."""
    memory_text, memory_rows = breakdown.breakdown_markdown(frame, scan.records)
    return [_write_text(out / "memory_breakdown.md", memory_text),
            _write_csv(out / "memory_breakdown.csv", memory_rows)]


def write_index(out: Path, **content) -> list[Path]:
    """The report's front page (README.md, index.html): see ``bench/reporting/index.py``."""
    return index.write_index(out, **content)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reporting.report",
        description="Regenerate the report (summary.csv/.md/.tex, per-attribute and frames tables, figures) of a "
                    "benchmark output folder from its result JSONs. Column definitions: results/README.md.")
    parser.add_argument("folder", type=Path, help="folder holding one result JSON per run (a sweep's --out)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: FOLDER/report)")
    parser.add_argument("--no-explore", action="store_true",
                        help="leave out explore.html, the offline explorer page (about 5 MB: plotly.js inlined)")
    return parser


@entry_point("bench.reporting.report")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    written = write_reports(args.folder, args.out, explore=not args.no_explore)
    for path in written:
        print(str(path).encode("utf-8", "backslashreplace").decode("utf-8"))  # a name that is not UTF-8 prints too
    return 0


if __name__ == "__main__":
    sys.exit(main())
