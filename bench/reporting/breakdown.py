"""Where a strategy's training memory and compute go: peak memory by category, saved activations by module and
forward FLOPs by module, per setting.

Generated into ``memory_breakdown.md`` / ``memory_breakdown.csv`` by ``python -m bench.reporting.report``. Categories
are the torch profiler's at the step's peak (CPU runs: ``peak_mem_<category>_bytes``, bench/measure/profile.py
``cpu_peak_memory``); the module table is what autograd saved for backward during one training forward, charged to the
module that saved it (``activation_bytes_by_module``); the FLOPs table is one forward pass of the training batch
charged to the module that ran it (``fwd_flops_by_module``; backward has no trustworthy split, its total is in the
summary). All are means over seeds; MiB = 2^20 bytes, GFLOPs = 10^9 FLOPs (2 x MACs).
"""
from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from bench.records import dig
from bench.records import row as record_row
from bench.reporting import tables

MIB = 2**20
GFLOP = 1e9
CATEGORY_HEADERS = {"params": "params", "grads": "grads", "optimizer_state": "optimizer state",
                    "activations": "activations", "inputs": "inputs", "autograd_detail": "autograd detail",
                    "temporaries": "temporaries", "unknown": "unknown"}
TOP_MODULES = 4  # modules shown per setting: the union of each strategy's largest this many


def category_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Strategies x categories (MiB, mean over seeds) plus the total peak; empty when no run has categories."""
    columns = [f"peak_mem_{c}_bytes" for c in CATEGORY_HEADERS]
    if runs[columns].isna().all().all():
        return pd.DataFrame()
    means = runs.groupby("strategy", sort=False)[columns + ["peak_mem_bytes"]].mean() / MIB
    means.columns = [*CATEGORY_HEADERS.values(), "peak (total)"]
    return means.dropna(axis=1, how="all").loc[:, lambda t: (t.fillna(0) != 0).any()]


def module_long(records: list[dict], key: str = "activation_saved_bytes_by_module") -> pd.DataFrame:
    """One row per (run, module): the setting columns, strategy, module, value (``profile.<key>``: bytes, FLOPs)."""
    rows = []
    for record in records:
        flat = record_row(record)
        modules = dig(record, "profile", key) or {}
        if flat["status"] == "ok":
            rows += [{**{k: flat[k] for k in ("strategy", *tables.SETTING)}, "module": name, "value": size}
                     for name, size in modules.items()]
    return pd.DataFrame(rows, columns=["strategy", *tables.SETTING, "module", "value"])


def module_table(long: pd.DataFrame, unit: float = MIB, total: str = "total saved") -> pd.DataFrame:
    """Strategies x modules (values / ``unit``); modules outside every strategy's top few go to ``other``."""
    if long.empty:
        return pd.DataFrame()
    table = long.pivot_table(index="strategy", columns="module", values="value", aggfunc="mean", sort=False) / unit
    keep = sorted({m for _, row in table.iterrows() for m in row.dropna().nlargest(TOP_MODULES).index})
    shown = table[keep].copy()
    shown["other"] = table.drop(columns=keep).sum(axis=1, min_count=1)
    shown[total] = table.sum(axis=1, min_count=1)
    return shown.reindex(tables.strategy_order(shown.index))


def _settings(frame: pd.DataFrame) -> list[dict]:
    ok = frame[frame["status"] == "ok"]
    unique = ok[tables.SETTING].astype("object").drop_duplicates()
    return [dict(zip(tables.SETTING, values, strict=True)) for values in unique.itertuples(index=False)]


def _one_decimal(table: pd.DataFrame) -> str:
    cells = table.map(lambda v: "-" if pd.isna(v) else f"{v:.1f}")
    return tabulate(cells.rename_axis("strategy"), headers="keys", tablefmt="github", disable_numparse=True)


def breakdown_markdown(frame: pd.DataFrame, records: list[dict]) -> tuple[str, pd.DataFrame]:
    """The Markdown report and its long CSV form (one row per strategy, setting and category or module)."""
    lines, csv_rows = ["# Training memory and compute breakdown", "", __doc__, ""], []
    long_modules, long_flops = module_long(records), module_long(records, "fwd_flops_by_module")
    for setting in _settings(frame):
        runs = tables.sort_runs(tables.select_setting(frame[frame["status"] == "ok"], setting))
        categories = category_table(runs).reindex(tables.strategy_order(runs["strategy"]))
        modules = module_table(tables.select_setting(long_modules, setting))
        flops = module_table(tables.select_setting(long_flops, setting), unit=GFLOP, total="forward total")
        lines += [f"## {tables._setting_text(setting)}", ""]
        if not categories.empty:
            lines += ["Peak memory of one training step by category:", "", _one_decimal(categories), ""]
        if not modules.empty:
            lines += ["Activations saved for backward, by module:", "", _one_decimal(modules), ""]
        if not flops.empty:
            lines += ["Forward GFLOPs of one training batch, by module:", "", _one_decimal(flops), ""]
        for kind, table in (("peak_mib_by_category", categories), ("saved_mib_by_module", modules),
                            ("forward_gflops_by_module", flops)):
            for strategy, row in table.iterrows():
                csv_rows += [{**setting, "strategy": strategy, "kind": kind, "name": name, "value": value}
                             for name, value in row.items() if pd.notna(value)]
    if len(lines) == 4:
        lines += ["No successful run with a memory breakdown.", ""]
    return "\n".join(lines), pd.DataFrame(csv_rows)
