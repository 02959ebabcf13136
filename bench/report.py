"""Reports generated from result JSONs: one pandas DataFrame, then tables (Markdown / LaTeX / CSV) and plots.

Every figure comes from result files; nothing here is typed in by hand.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.results import ResultFileError, read_result

COLUMNS = {  # column -> (dtype, better): "higher" / "lower" / None (descriptive)
    "strategy": ("string", None), "status": ("string", None), "seed": ("Int64", None), "frames": ("Int64", None),
    "batch_size": ("Int64", None),
    "macro_f1": ("float64", "higher"), "paper_f1": ("float64", "higher"), "mA": ("float64", "higher"),
    "macro_acc": ("float64", "higher"), "majority_macro_f1": ("float64", None),
    "params_trainable": ("Int64", "lower"), "params_total": ("Int64", None), "params_added": ("Int64", None),
    "peak_mem_bytes": ("Int64", "lower"), "peak_mem_kind": ("string", None),
    "step_time_ms_median": ("float64", "lower"), "throughput_clips_per_s": ("float64", "higher"),
    "train_time_s": ("float64", "lower"), "error": ("string", None),
}


def load_records(folder: Path) -> list[dict]:
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        if path.name.endswith(".failed.json"):
            continue
        try:
            records.append(read_result(path))
        except ResultFileError as error:
            print(f"warning: skipped {error}")
    return records


def flatten(record: dict) -> dict:
    run, cfg = record["run"], record["run"]["config"]
    test = record.get("metrics", {}).get("test", {})
    majority = record.get("metrics", {}).get("majority_test", {})
    row = {"strategy": run["strategy"], "status": run["status"], "seed": cfg["train"]["seed"],
           "frames": cfg["data"]["frames"], "batch_size": cfg["train"]["batch_size"],
           "macro_f1": test.get("macro_f1"), "paper_f1": test.get("paper_f1"), "mA": test.get("mA"),
           "macro_acc": test.get("macro_acc"), "majority_macro_f1": majority.get("macro_f1"), "error": run["error"]}
    row.update({key: record.get("profile", {}).get(key) for key in COLUMNS if key not in row})
    return row


def to_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([flatten(r) for r in records], columns=list(COLUMNS))
    return frame.astype({column: dtype for column, (dtype, _) in COLUMNS.items()})


def summary_table(frame: pd.DataFrame) -> str:
    """The table printed at the end of a sweep."""
    view = pd.DataFrame({
        "strategy": frame["strategy"], "status": frame["status"],
        "macro-F1": frame["macro_f1"], "paper-F1": frame["paper_f1"], "mA": frame["mA"],
        "majority macro-F1": frame["majority_macro_f1"],
        "trainable params": frame["params_trainable"],
        "peak mem (MiB)": frame["peak_mem_bytes"].astype("float64") / 2**20,
        "step (ms)": frame["step_time_ms_median"], "train (s)": frame["train_time_s"],
    })
    return tabulate(view, headers="keys", tablefmt="github", showindex=False, floatfmt=".3f", missingval="-")
