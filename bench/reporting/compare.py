"""Side-by-side comparison of sweeps that differ in one setting, e.g. the embedded default on a random backbone and
on the shipped pretrained one::

    python -m bench.reporting.compare results/default-random results/default --labels random,pretrained

Each folder is read like ``bench.reporting.report`` reads it (successful runs, mean over seeds per strategy and
setting); the table has one row per strategy and, per folder, macro-F1, paper-F1, peak training memory, step time,
memory and step time as ratios to ``full`` of the same folder, and tunable parameters, plus the macro-F1 change from the
first folder to each later one; columns without any value (F1 of profile-only sweeps) are left out. Written as
``compare.md`` and ``compare.csv``, e.g. fp32 beside bf16::

    python -m bench.reporting.compare results/paper-profile-cpu results/paper-profile-cpu-bf16 --labels fp32,bf16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.boundary import ensure_writable_folder, entry_point
from bench.records import write_atomic
from bench.reporting import report

SHOWN = {  # aggregated column -> (header, scale, format)
    "macro_f1_mean": ("macro-F1 (%)", 100.0, ".2f"),
    "paper_f1_mean": ("paper-F1 (%)", 100.0, ".2f"),
    "peak_mem_bytes_mean": ("peak mem (MiB)", 1 / 2**20, ".1f"),
    "step_time_ms_median_mean": ("step (ms)", 1.0, ".0f"),
    "mem / full": ("mem / full", 1.0, ".2f"),
    "step / full": ("step / full", 1.0, ".2f"),
    "params_trainable_mean": ("params (M)", 1e-6, ".3f"),
}


def sweep_summary(folder: Path) -> pd.DataFrame:
    """One row per strategy of a result folder (its single setting), the columns of ``SHOWN``."""
    records = report.load_records(Path(folder)) if Path(folder).is_dir() else []
    agg = report.aggregate(report.to_frame(records)) if records else pd.DataFrame()
    if agg.empty:
        raise report.ReportError(f"{folder}: no successful run to compare")
    settings = agg[report.SETTING].drop_duplicates()
    if len(settings) > 1:
        raise report.ReportError(f"{folder}: holds {len(settings)} settings (frames / batch / backbone / precision); "
                                 "compare folders of one setting each")
    return agg.set_index("strategy")[list(SHOWN)].astype("float64")


def compare_frame(folders: list[Path], labels: list[str]) -> pd.DataFrame:
    """Strategies (in report order) x (label, metric); ``delta macro-F1`` = later label minus the first."""
    summaries = {label: sweep_summary(folder) for folder, label in zip(folders, labels, strict=True)}
    strategies = report.strategy_order(set().union(*(s.index for s in summaries.values())))
    table = pd.concat(summaries, axis=1).reindex(strategies)
    first = labels[0]
    for label in labels[1:]:
        table[(f"{label} - {first}", "macro_f1_delta")] = (table[(label, "macro_f1_mean")]
                                                           - table[(first, "macro_f1_mean")])
    return table.dropna(axis=1, how="all")  # e.g. F1 of profile-only sweeps


def _header(label: str, metric: str) -> str:
    if metric == "macro_f1_delta":
        return f"macro-F1 {label} (pts)"
    return f"{SHOWN[metric][0]} {label}"


def _cell(metric: str, value: float) -> str:
    if pd.isna(value):
        return "-"
    if metric == "macro_f1_delta":
        return f"{100.0 * value:+.2f}"
    _, scale, fmt = SHOWN[metric]
    return format(value * scale, fmt)


def compare_markdown(table: pd.DataFrame) -> str:
    headers = ["strategy"] + [_header(label, metric) for label, metric in table.columns]
    rows = [[strategy] + [_cell(metric, row[(label, metric)]) for label, metric in table.columns]
            for strategy, row in table.iterrows()]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.reporting.compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="two or more sweep output folders (--out)")
    parser.add_argument("--labels", help="comma-separated column labels, one per folder (default: folder names)")
    parser.add_argument("--out", type=Path, help="folder for compare.md / compare.csv (default: the last folder's "
                                                 "report/ folder)")
    return parser


@entry_point("bench.reporting.compare")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    labels = args.labels.split(",") if args.labels else [folder.name for folder in args.folders]
    if len(args.folders) < 2 or len(labels) != len(args.folders):
        print(f"error: need two or more folders and one label per folder, got {len(args.folders)} folder(s) and "
              f"{len(labels)} label(s)", file=sys.stderr)
        return 2
    table = compare_frame(args.folders, labels)
    out = ensure_writable_folder(args.out or args.folders[-1] / "report")
    text = compare_markdown(table)
    sources = ", ".join(f"{label} = {folder}" for label, folder in zip(labels, args.folders, strict=True))
    write_atomic(out / "compare.md", lambda handle: handle.write(f"Compared: {sources}\n\n{text}\n"))
    flat = table.copy()
    flat.columns = [f"{label}:{metric}" for label, metric in table.columns]
    write_atomic(out / "compare.csv", lambda handle: flat.rename_axis("strategy").to_csv(handle))
    print(text)
    print(f"written: {out / 'compare.md'}, {out / 'compare.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
