"""tuning.md: what ``--tune`` chose per strategy, what the grid cost, and whether tuning changed the ranking.

Read from ``OUT/tuning/tuning.json`` (bench/runner/tuning.py) and the sweep's own records. The ranking is compared
on the validation split, where the grid measured every point: each strategy at its own default values (when the
grid holds them) against each at its chosen values; the test split was never read by the grid.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate

TUNING_FILE = Path("tuning") / "tuning.json"


def read_tuning(folder: Path) -> dict | None:
    """The sweep's tuning document, or None when the sweep was not tuned (or the file is not a tuning document)."""
    path = Path(folder) / TUNING_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) and document.get("kind") == "tuning" else None


def _values(point: dict) -> str:
    return ", ".join(f"{key} {value:g}" for key, value in point.items())


def _default_score(entry: dict) -> float | None:
    """The mean validation score at the strategy's own defaults, when the grid ran them."""
    for row in entry["points"]:
        if row["values"] == {key: entry["defaults"][key] for key in row["values"]}:
            return row["val_mean"]
    return None


def tuning_rows(document: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per tuned strategy: defaults, choice, validation scores, test score of the tuned run, grid cost."""
    rows = []
    for name, entry in document["strategies"].items():
        tested = frame[(frame["strategy"] == name) & (frame["status"] == "ok")]["macro_f1"].astype(float)
        chosen = next(row for row in entry["points"] if row["values"] == entry["chosen"])
        cost = entry["cost"]
        rows.append({"strategy": name, "defaults": _values(entry["defaults"]), "chosen": _values(entry["chosen"]),
                     "changed": "yes" if entry["changed"] else "no", "val_default": _default_score(entry),
                     "val_chosen": chosen["val_mean"], "test_macro_f1": tested.mean() if len(tested) else None,
                     "grid_runs": cost["runs"], "grid_train_hours": cost["train_hours"],
                     "grid_peak_mem_bytes": cost["peak_mem_bytes_max"]})
    rows = pd.DataFrame(rows)
    rows["rank_default"] = rows["val_default"].rank(ascending=False, method="min")
    rows["rank_chosen"] = rows["val_chosen"].rank(ascending=False, method="min")
    return rows


def _percent(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{100 * value:.2f}"


def tuning_markdown(document: dict, frame: pd.DataFrame) -> str:
    rows = tuning_rows(document, frame)
    metric = document["select_metric"]
    table = [[r.strategy, r.defaults, r.chosen, r.changed, _percent(r.val_default), _percent(r.val_chosen),
              "-" if pd.isna(r.rank_default) else int(r.rank_default), int(r.rank_chosen), _percent(r.test_macro_f1),
              r.grid_runs, f"{r.grid_train_hours:.3f}",
              "-" if r.grid_peak_mem_bytes is None or pd.isna(r.grid_peak_mem_bytes)
              else f"{r.grid_peak_mem_bytes / 2**20:.1f}"] for r in rows.itertuples()]
    headers = ["strategy", "defaults", "chosen", "changed", f"val {metric} at defaults (%)",
               f"val {metric} chosen (%)", "rank at defaults", "rank tuned", "test macro-F1 tuned (%)", "grid runs",
               "grid train (h)", "grid peak mem (MiB)"]
    comparable = rows.dropna(subset=["rank_default"])
    changed = (comparable["rank_default"] != comparable["rank_chosen"]).any() if len(comparable) else None
    verdict = ("the grid did not hold every strategy's defaults, so the ranking at defaults is not measured"
               if len(comparable) < len(rows) else
               f"tuning {'changed' if changed else 'did not change'} the ranking on the validation split")
    total = rows[["grid_runs", "grid_train_hours"]].sum()
    axes = "; ".join(f"{key}: {', '.join(f'{v:g}' for v in values)}" for key, values in document["axes"].items())
    return (f"# Tuning (`--tune`)\n\nGenerated from tuning/tuning.json. Grid: {axes}. Each point ran under protocol "
            f"`{document['grid_protocol']}` (the test split is never built) and was scored by the mean validation "
            f"{metric} over the seeds; the best was chosen and the sweep's runs trained with it. "
            f"`backbone_lr_scale` is tuned only for strategies that train pretrained weights.\n\n"
            f"{tabulate(table, headers=headers, tablefmt='github')}\n\n"
            f"Ranking: {verdict}. The grid cost {int(total['grid_runs'])} runs and "
            f"{total['grid_train_hours']:.3f} training hours in all (on top of the sweep's own runs).\n")
