"""The report's tables: result JSONs -> one pandas DataFrame -> tables (Markdown / LaTeX / CSV).

Every figure comes from result files; nothing here is typed in by hand. ``bench/reporting/report.py`` writes these
tables, the figures (``bench/reporting/plots.py``) and the front page (``bench/reporting/index.py``) into a report
folder (see ``results/README.md`` for every column and figure):

* ``summary.csv`` -- one row per run, the columns of ``COLUMNS``;
* ``summary.md`` / ``summary.tex`` -- mean +- sample std over seeds per strategy and setting (``SETTING`` of
  ``bench/records.py``), ratios against ``full`` at the same setting, and the failed runs with their errors;
* ``per_attribute_f1.{md,csv}`` / ``per_group_f1.csv`` -- VTF Table 2 layout (Zhu et al., CVPR-W 2023): attributes
  as rows, strategies as columns, plus an "Average" row;
* ``frames_ablation.{md,csv}`` -- VTF Table 3 layout: strategies as rows, frame counts as columns;
* ``statistics.md``, ``statistics.csv``, ``paired_comparisons.csv`` -- two-stage bootstrap intervals over seeds and
  test clips and paired comparisons (``bench/measure/statistics.py``), where the runs stored their test predictions;
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError
from bench.measure import statistics
from bench.records import (
    FAILED_SUFFIX,
    MEMORY_CATEGORIES,
    SETTING,
    ResultFileError,
    dig,
    read_record,
    write_atomic,
)
from bench.records import row as record_row
from data.schema import KINDS

COLUMNS = {  # column of ``records.row`` -> (dtype, better): "higher" / "lower" / None (descriptive)
    "run_id": ("string", None), "strategy": ("string", None), "family": ("string", None),
    "status": ("string", None), "mode": ("string", None), "dataset": ("string", None),
    "backbone": ("string", None), "device": ("string", None),
    "seed": ("Int64", None), "frames": ("Int64", None), "batch_size": ("Int64", None),
    "world_size": ("Int64", None), "batch_per_rank": ("Int64", None),
    "precision": ("string", None), "switches": ("string", None),
    "paper_f1": ("float64", "higher"), "paper_precision": ("float64", "higher"),
    "paper_recall": ("float64", "higher"), "paper_acc": ("float64", "higher"),
    "macro_f1": ("float64", "higher"), "macro_acc": ("float64", "higher"),
    "macro_f1_identity": ("float64", "higher"), "mA": ("float64", "higher"),
    **{f"macro_f1_{kind}": ("float64", "higher") for kind in KINDS},
    "majority_paper_f1": ("float64", None), "majority_macro_f1": ("float64", None), "best_epoch": ("Int64", None),
    "params_trainable": ("Int64", "lower"), "params_total": ("Int64", None), "params_added": ("Int64", None),
    "fwd_flops_per_clip": ("float64", "lower"), "train_step_flops": ("float64", "lower"),
    "peak_mem_bytes": ("Int64", "lower"), "peak_mem_kind": ("string", None),
    "step_time_ms_median": ("float64", "lower"), "throughput_clips_per_s": ("float64", "higher"),
    "train_time_s": ("float64", "lower"), "eval_time_s": ("float64", "lower"),
    "git_commit": ("string", None), "error": ("string", None),
    **{f"peak_mem_{c}_bytes": ("Int64", "lower") for c in MEMORY_CATEGORIES},
    "activation_saved_bytes": ("Int64", "lower"),
}
# Runs compared with each other share these: a DDP run's world size and per-rank batch, and precision and numeric
# switches (a bf16 run is never averaged with an fp32 one or shown in its row).
SETTING = list(SETTING)  # bench/records.py: the one definition
GROUP_KEYS = ["strategy", *SETTING]  # seeds of one group are averaged
AGGREGATED = ("paper_f1", "macro_f1", "mA", *(f"macro_f1_{kind}" for kind in KINDS), "params_trainable",
              "params_added", "train_step_flops",
              "fwd_flops_per_clip", "peak_mem_bytes", "step_time_ms_median", "throughput_clips_per_s",
              "train_time_s")
RATIOS = {"mem / full": "peak_mem_bytes", "step / full": "step_time_ms_median", "GFLOPs / full": "train_step_flops"}
FIRST_STRATEGIES = ("full", "frozen")  # the two reference points of every table; the rest follow alphabetically


class ReportError(BenchError, ValueError):
    """A report cannot be built from the given folder."""


@dataclass(frozen=True)
class Display:
    """One column of the Markdown / LaTeX summary: source metric, scale, number format, unit in the header."""

    header: str
    source: str
    scale: float = 1.0
    fmt: str = ".2f"
    significant: int = 0  # > 0: that many significant digits in fixed notation (``fmt`` unused), never an exponent

    @property
    def better(self) -> str | None:
        return COLUMNS[self.source][1]

    def spec(self, column) -> str:
        """Format spec shared by a whole column of raw values: ``fmt``; or, with ``significant``, the fixed decimals
        that give the column's smallest non-zero value that many significant digits, at most 4 (0.237 and 1.077;
        0.951 and 87.144; 426 and 1270): one precision per column, so decimal points line up, never an exponent."""
        if not self.significant:
            return self.fmt
        scaled = [abs(float(v)) * self.scale for v in column if v is not None and not pd.isna(v) and v != 0]
        if not scaled:
            return ".0f"
        return f".{min(max(self.significant - 1 - math.floor(math.log10(min(scaled))), 0), 4)}f"

    def text(self, value, spec: str | None = None) -> str:
        """One raw value (bytes, counts, fractions) in this column's unit and format; "-" where missing."""
        if value is None or pd.isna(value):
            return "-"
        return format(float(value) * self.scale, spec or self.spec([value]))


DISPLAY = (
    Display("paper-F1 (%)", "paper_f1", 100.0), Display("macro-F1 (%)", "macro_f1", 100.0),
    Display("mA (%)", "mA", 100.0), Display("params (M)", "params_trainable", 1e-6, significant=3),
    Display("train-step GFLOPs (2xMAC)", "train_step_flops", 1e-9, significant=3),
    Display("peak mem (MiB)", "peak_mem_bytes", 1 / 2**20, ".1f"),
    Display("step (ms)", "step_time_ms_median", 1.0, ".1f"),
    Display("clips/s", "throughput_clips_per_s", 1.0, significant=3),
)
CONSOLE = (  # the table printed at the end of a sweep: one row per run, the units and formats of summary.md
    *(d for d in DISPLAY if d.source in ("macro_f1", "paper_f1", "mA")),
    Display("majority macro-F1 (%)", "majority_macro_f1", 100.0),
    *(d for d in DISPLAY if d.source in ("params_trainable", "peak_mem_bytes", "step_time_ms_median")),
    Display("train (s)", "train_time_s", 1.0, ".1f"),
)
TEXT_COLUMNS = ("strategy", "status", "dataset", "backbone", "device")  # left-aligned; numbers align right


@dataclass
class Scan:
    """What a result folder holds: run records, superseded failed attempts and unreadable files."""

    records: list[dict] = field(default_factory=list)
    failed_attempts: list[dict] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # copies of a record already read, counted once


def _canonical_first(path: Path) -> tuple:
    """Files named after their run (``<run_id>.json``) sort before copies such as ``<run_id> (copy).json``."""
    return (path.name.endswith(FAILED_SUFFIX), " " in path.stem or "copy" in path.stem.lower(), path.name)


def scan_folder(folder: Path) -> Scan:
    """Read every ``*.json`` of ``folder``; ``<run>.failed.json`` is a failed retry beside a kept good result.

    A record with the run id and config digest of one already read is a copy (e.g. a file duplicated under another
    name): it is listed in ``duplicates`` and counted once, so it can never pose as an extra seed."""
    scan, seen = Scan(), {}
    for path in sorted(Path(folder).glob("*.json"), key=_canonical_first):
        try:
            record = read_record(path)
        except ResultFileError as error:
            scan.unreadable.append(str(error))
            continue
        failed_retry = path.name.endswith(FAILED_SUFFIX)
        key = (failed_retry, record["run"]["id"], record["run"].get("config_digest"))
        if key in seen:
            scan.duplicates.append(f"{path}: same run id and config as {seen[key].name}; counted once")
            continue
        seen[key] = path
        (scan.failed_attempts if failed_retry else scan.records).append(record)
    return scan


def load_records(folder: Path) -> list[dict]:
    scan = scan_folder(folder)
    for message in scan.unreadable + scan.duplicates:
        print(f"warning: skipped {message}")
    return scan.records


def to_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([record_row(r) for r in records], columns=list(COLUMNS))
    return frame.astype({column: dtype for column, (dtype, _) in COLUMNS.items()})


def strategy_order(names) -> list[str]:
    """``full``, ``frozen``, then every other strategy alphabetically: stable whatever strategies exist."""
    present = sorted({str(n) for n in names if not pd.isna(n)})
    return [s for s in FIRST_STRATEGIES if s in present] + [s for s in present if s not in FIRST_STRATEGIES]


def _in_strategy_order(frame: pd.DataFrame, then: list[str]) -> pd.DataFrame:
    rank = {name: i for i, name in enumerate(strategy_order(frame["strategy"]))}
    ordered = frame.assign(_rank=frame["strategy"].map(rank).astype("float64"))
    ordered = ordered.sort_values(["_rank", *then], kind="stable", na_position="last")
    return ordered.drop(columns="_rank").reset_index(drop=True)


def sort_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in strategy order, then dataset, backbone, frames, batch size, seed, run id."""
    return _in_strategy_order(frame, [*SETTING, "seed", "run_id"])


def read_summary_csv(path: Path) -> pd.DataFrame:
    """``summary.csv`` back into a frame with the dtypes of ``COLUMNS``."""
    frame = pd.read_csv(path, dtype={c: ("float64" if d == "Int64" else d) for c, (d, _) in COLUMNS.items()},
                        keep_default_na=False, na_values=[""])
    return frame.astype({column: dtype for column, (dtype, _) in COLUMNS.items()})[list(COLUMNS)]


def headline_f1(frame: pd.DataFrame) -> str | None:
    """The F1 shown in figures: the paper protocol (VTF / VTFPAR++ tables) when any run has it, else macro-F1."""
    for column in ("paper_f1", "macro_f1"):
        if frame[column].notna().any():
            return column
    return None


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Successful runs -> one row per (strategy, setting): ``seeds``, ``<metric>_mean``, ``<metric>_std``.

    The std is the sample standard deviation (ddof = 1) over seeds, NaN for a single seed.
    """
    ok = frame[frame["status"] == "ok"]
    values = ok[list(AGGREGATED)].astype("float64")
    groups = values.groupby([ok[k].astype("object") for k in GROUP_KEYS], dropna=False, sort=False)
    stats = groups.agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "seeds", groups.size())
    result = stats.reset_index()
    result = result.astype({k: COLUMNS[k][0] for k in GROUP_KEYS}).astype({"seeds": "Int64"})
    return _with_ratios(_in_strategy_order(result, SETTING))


def _with_ratios(agg: pd.DataFrame) -> pd.DataFrame:
    """Ratio of each strategy's mean to the mean of ``full`` at the same setting (NaN where there is no full run)."""
    full = agg[agg["strategy"] == "full"]
    reference = {_setting_key(row): row for _, row in full.iterrows()}
    for label, metric in RATIOS.items():
        ratios = [_ratio(row, reference.get(_setting_key(row)), metric) for _, row in agg.iterrows()]
        agg[label] = pd.Series(ratios, index=agg.index, dtype="float64")
    return agg


def _setting_key(row: pd.Series) -> tuple:
    return tuple(None if pd.isna(row[k]) else row[k] for k in SETTING)


def _ratio(row: pd.Series, full: pd.Series | None, metric: str) -> float:
    if full is None:
        return float("nan")
    num, den = row[f"{metric}_mean"], full[f"{metric}_mean"]
    return float(num / den) if pd.notna(num) and pd.notna(den) and den != 0 else float("nan")


def reference_setting(frame: pd.DataFrame) -> dict | None:
    """The setting shown in single-setting figures: most strategies with results, then most frames, largest batch.

    VTF reports its per-attribute table at its longest clip (6 frames), hence the tie-break on frames.
    """
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return None
    counts = ok.groupby([ok[k].astype("object") for k in SETTING], dropna=False)["strategy"].nunique()
    best = max(counts.items(),
               key=lambda item: (item[1], sort_number(item[0][2]), sort_number(item[0][3]), str(item[0])))[0]
    return dict(zip(SETTING, best, strict=True))


def sort_number(value) -> float:
    """A setting value as a sort key: missing sorts below every real value."""
    return -1.0 if pd.isna(value) else float(value)


def select_setting(frame: pd.DataFrame, setting: dict) -> pd.DataFrame:
    """Rows of ``frame`` matching every key of ``setting`` (a missing value matches a missing value)."""
    mask = pd.Series(True, index=frame.index)
    for key, value in setting.items():
        mask &= frame[key].isna() if pd.isna(value) else (frame[key] == value).fillna(False)
    return frame[mask]


def _cell(mean: float, std: float, seeds: int, display: Display, spec: str) -> str:
    text = display.text(mean, spec)
    if text != "-" and seeds > 1 and pd.notna(std) and std != 0:  # zero spread (parameter counts, FLOPs): mean alone
        text += " ± " + display.text(std, spec)
    return text


def column_alignment(view: pd.DataFrame) -> list[str]:
    """Names left, numbers right (so decimal places line up in Markdown, LaTeX and the console alike)."""
    return ["left" if str(column).split(" ")[0] in TEXT_COLUMNS else "right" for column in view.columns]


def _varying(agg: pd.DataFrame, columns) -> list[str]:
    return [c for c in columns if agg[c].astype("object").nunique(dropna=False) > 1]


def summary_view(agg: pd.DataFrame, *, arrows: bool) -> pd.DataFrame:
    """The aggregated table as display strings; dataset / backbone columns only when they vary."""
    mark = {"higher": " ↑", "lower": " ↓", None: ""} if arrows else {"higher": "", "lower": "", None: ""}
    view = pd.DataFrame({"strategy": agg["strategy"]})
    for key in _varying(agg, ["dataset", "backbone"]):
        view[key] = agg[key]
    view["frames"], view["batch"], view["precision"] = agg["frames"], agg["batch_size"], agg["precision"]
    for key in _varying(agg, ["world_size", "batch_per_rank", "switches"]):
        view[key] = agg[key]
    view["seeds"] = agg["seeds"]
    for d in DISPLAY:
        means, spec = agg[f"{d.source}_mean"], d.spec(agg[f"{d.source}_mean"])
        view[d.header + mark[d.better]] = [_cell(m, s, int(n), d, spec) for m, s, n in
                                          zip(means, agg[f"{d.source}_std"], agg["seeds"], strict=True)]
    for label in RATIOS:
        view[label + mark["lower"]] = [("-" if pd.isna(v) else f"{v:.2f}") for v in agg[label]]
    return view.astype("object").where(view.notna(), "-")


def summary_table(frame: pd.DataFrame) -> str:
    """The table printed at the end of a sweep: one row per run, in the units and number formats of summary.md."""
    view = pd.DataFrame({"strategy": frame["strategy"], "status": frame["status"]})
    for display in CONSOLE:
        spec = display.spec(frame[display.source])
        view[display.header] = [display.text(value, spec) for value in frame[display.source]]
    view = view.astype("object").where(view.notna(), "-")
    return tabulate(view, headers="keys", tablefmt="github", showindex=False, disable_numparse=True,
                    colalign=column_alignment(view))


LEGEND = {
    "paper-F1 (%)": "test F1 of the paper protocol (VTF / VTFPAR++ code: threshold 0.45, per-group micro counts, "
                    "mean over groups)",
    "macro-F1 (%)": "test macro-F1 per group (Chen et al., PRCV 2019: argmax / threshold 0.5), mean over groups",
    "mA (%)": "test label-based mean accuracy, (TPR + TNR) / 2 per column, mean over columns",
    "params (M)": "trainable parameters, millions (requires_grad at training time)",
    "train-step GFLOPs (2xMAC)": "forward + backward FLOPs of one training step (1 MAC = 2 FLOPs), 1e9",
    "peak mem (MiB)": "peak training memory over the training window, MiB (2^20 bytes); kind in summary.csv",
    "step (ms)": "median wall time of one training step after warm-up, milliseconds",
    "clips/s": "training throughput, clips per second (batch size / median step time)",
    "mem / full": "peak memory divided by that of `full` at the same dataset, backbone, frames, batch size, "
                  "precision and switches",
    "step / full": "step time divided by that of `full` at the same setting",
    "GFLOPs / full": "train-step FLOPs divided by those of `full` at the same setting",
}
BETTER_WORDS = {"higher": "↑ higher is better", "lower": "↓ lower is better"}
MAX_ERROR_CHARS = 300


def legend_lines() -> list[str]:
    betters = {d.header: d.better for d in DISPLAY} | {label: "lower" for label in RATIOS}
    return [f"- **{header}** ({BETTER_WORDS[betters[header]]}): {text}" for header, text in LEGEND.items()]


def _md_text(value) -> str:
    """A cell safe inside a GitHub table: no newlines, no bare pipes, bounded length."""
    text = "-" if value is None or pd.isna(value) else " ".join(str(value).split())
    text = text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."
    return text.replace("|", "\\|")


def failed_view(frame: pd.DataFrame, attempts: list[dict]) -> pd.DataFrame:
    """Failed runs (status != ok) and failed retries kept beside an earlier good result."""
    bad = frame[frame["status"] != "ok"].assign(note="")
    retries = sort_runs(to_frame(attempts)).assign(note="retry failed; earlier ok result kept") if attempts else None
    rows = pd.concat([bad, retries]) if retries is not None else bad
    columns = ["run_id", "strategy", "frames", "batch_size", "seed", "status", "error", "note"]
    return pd.DataFrame({c: [_md_text(v) for v in rows[c]] for c in columns}, columns=columns)


def _provenance(frame: pd.DataFrame) -> list[str]:
    def values(column: str) -> str:
        found = sorted({str(v) for v in frame[column].dropna()})
        return ", ".join(v[:10] if column == "git_commit" else v for v in found) or "-"
    return [f"- device: {values('device')}", f"- dataset: {values('dataset')}", f"- backbone: {values('backbone')}",
            f"- git commit(s): {values('git_commit')}"]


def results_markdown(agg: pd.DataFrame) -> str:
    """The aggregated table of summary.md (also shown by the report index)."""
    view = summary_view(agg, arrows=True)
    return tabulate(view, headers="keys", tablefmt="github", showindex=False, disable_numparse=True,
                    colalign=column_alignment(view))


def summary_markdown(frame: pd.DataFrame, agg: pd.DataFrame, scan: Scan, *, source: str) -> str:
    profile_only = int(((frame["status"] == "ok") & frame["paper_f1"].isna() & frame["macro_f1"].isna()).sum())
    lines = ["# Benchmark summary", "",
             f"Generated by `python -m bench.reporting.report` from {len(frame)} result files in `{source}`: "
             "regenerate, do not edit.", "", *_provenance(frame), "",
             "Cells are mean ± sample std (ddof = 1) over seeds when a group has several seeds; `-` = not measured "
             f"or no metrics ({profile_only} profile-only runs have no F1).", "", "## Legend", "", *legend_lines(),
             "", "## Results", "", results_markdown(agg), "",
             "## Failed runs", ""]
    failed = failed_view(frame, scan.failed_attempts)
    lines += [tabulate(failed, headers="keys", tablefmt="github", showindex=False, disable_numparse=True)
              if len(failed) else "None."]
    if scan.unreadable:
        lines += ["", "## Unreadable result files", "", *[f"- {_md_text(m)}" for m in scan.unreadable]]
    if scan.duplicates:
        lines += ["", "## Duplicate result files (counted once)", "", *[f"- {_md_text(m)}" for m in scan.duplicates]]
    return "\n".join(lines) + "\n"


def summary_latex(agg: pd.DataFrame) -> str:
    """booktabs table; the better-direction of each column goes in a leading comment (no arrow glyphs in LaTeX)."""
    betters = {d.header: d.better for d in DISPLAY} | {label: "lower" for label in RATIOS}
    legend = "; ".join(f"{h}: {b}" for h, b in betters.items())
    view = summary_view(agg, arrows=False)
    table = tabulate(view, headers="keys", tablefmt="latex_booktabs", showindex=False, disable_numparse=True,
                     colalign=column_alignment(view))
    return (f"% Generated by python -m bench.reporting.report; mean ± sample std over seeds.\n"
            f"% Better direction -- {legend}.\n{table}\n")


ATTRIBUTE_LEVELS = {  # level -> (section of metrics.test, F1 key inside it)
    "column": ("per_column", "f1"),  # one row per one-hot column, F1 at the paper threshold
    "group": ("per_group", "paper_f1"),  # one row per attribute group: the rows of VTF Table 2
}


def attribute_f1(records: list[dict], *, level: str) -> pd.DataFrame:
    """Long table of per-attribute test F1 of successful runs: strategy, setting, seed, attribute, f1."""
    section, key = ATTRIBUTE_LEVELS[level]
    rows = []
    for record in records:
        flat, entries = record_row(record), dig(record, "metrics", "test", section) or {}
        if flat["status"] != "ok":
            continue
        base = {k: flat[k] for k in ("strategy", *SETTING, "seed")}
        rows += [{**base, "attribute": name, "f1": values.get(key)} for name, values in entries.items()]
    columns = ["strategy", *SETTING, "seed", "attribute", "f1"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({k: COLUMNS[k][0] for k in ("strategy", *SETTING, "seed")} | {"attribute": "string",
                                                                                      "f1": "float64"})


def attribute_table(long: pd.DataFrame, setting: dict) -> pd.DataFrame:
    """VTF Table 2 layout: attributes (schema order) x strategies, F1 mean over seeds, plus an "Average" row.

    The Average row is the unweighted mean of the rows above it; at group level it equals the run's paper-F1.
    """
    chosen = select_setting(long, setting)
    order = list(dict.fromkeys(chosen["attribute"]))
    table = chosen.pivot_table(index="attribute", columns="strategy", values="f1", aggfunc="mean", sort=False)
    table = table.reindex(index=[*order, "Average"], columns=strategy_order(chosen["strategy"]))
    table.loc["Average"] = table.iloc[:-1].mean(axis=0)  # the row exists first: pandas 2 cannot add one to no columns
    table.index.name, table.columns.name = "attribute", None
    return table


def _percent_table(table: pd.DataFrame) -> pd.DataFrame:
    return table.map(lambda v: "-" if pd.isna(v) else f"{100 * v:.2f}")


def _setting_text(setting: dict) -> str:
    ranks = f" over {setting['world_size']} ranks" if (setting.get("world_size") or 1) > 1 else ""
    switches = "" if setting.get("switches") in (None, "-") else f" ({setting['switches']})"
    return (f"dataset {setting['dataset']}, backbone {setting['backbone']}, {setting['frames']} frames, "
            f"batch {setting['batch_size']}{ranks}, {setting.get('precision')}{switches}")


def attribute_markdown(columns: pd.DataFrame, groups: pd.DataFrame, setting: dict) -> str:
    def md(table: pd.DataFrame) -> str:
        return tabulate(_percent_table(table), headers="keys", tablefmt="github", disable_numparse=True)
    header = ["# Per-attribute test F1 (%) -- VTF Table 2 layout", ""]
    if groups.empty or groups.columns.empty:
        return "\n".join([*header, "No successful run with per-attribute test metrics.", ""])
    return "\n".join([
        *header, f"Setting: {_setting_text(setting)}; mean over seeds. Generated by "
                 "`python -m bench.reporting.report`.", "",
        "## Attribute groups (paper protocol F1; Average = paper-F1)", "", md(groups), "",
        "## One-hot columns (F1 at the paper threshold 0.45)", "", md(columns), ""])


def kind_table(agg: pd.DataFrame) -> pd.DataFrame:
    """Macro-F1 per kind of attribute (data/schema.py: KINDS) and overall, one row per strategy and setting, as
    "mean ± std" over seeds in percent: what each strategy gains where attention, time or appearance is needed."""
    rows = []
    for _, row in agg.iterrows():
        if pd.isna(row.get("macro_f1_mean")):
            continue
        cells = {key: mean_std_text(row, key) for key in (*(f"macro_f1_{k}" for k in KINDS), "macro_f1")}
        rows.append({"strategy": row["strategy"], "frames": row["frames"], "switches": row["switches"],
                     "seeds": row["seeds"], **{k.removeprefix("macro_f1_"): v for k, v in cells.items()}})
    return pd.DataFrame(rows).rename(columns={"macro_f1": "overall"})


def mean_std_text(row, key: str) -> str:
    """``<key>_mean`` ± ``<key>_std`` of an aggregated row, in percent; "-" where there is no mean."""
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None or pd.isna(mean):
        return "-"
    return f"{100 * mean:.2f}" + ("" if std is None or pd.isna(std) else f" ± {100 * std:.2f}")


KINDS_LEGEND = ("Kinds (data/schema.py): appearance = visible within one frame in a small area; spatial = a relation "
                "between body parts; temporal = visible only across frames.")


def markdown_page(title: str, intro: str, rows, *, empty: str) -> str:
    """A generated Markdown page: title, one paragraph, then the table (or ``empty`` when there are no rows)."""
    lines = [f"# {title}", "", intro, ""]
    if len(rows) == 0:
        return "\n".join([*lines, empty, ""])
    return "\n".join([*lines, tabulate(rows, headers="keys", tablefmt="github", showindex=False,
                                       disable_numparse=True), ""])


def plan_rows(records: list[dict]) -> list[dict]:
    """One row per run whose record holds the cost plan made beside its measurement (``profile.plan``)."""
    rows = []
    for record in records:
        planned = (record.get("profile") or {}).get("plan")
        if not planned:
            continue
        run = {"run": record["run"]["id"], "strategy": record["run"]["strategy"]}
        if "error" in planned:
            rows.append({**run, "FLOPs equal": "not planned", "predicted peak (MiB)": "", "measured peak (MiB)": "",
                         "gap (%)": planned["error"], "memory measured as": "", "plan (s)": ""})
            continue
        has_peak = "peak_bytes_predicted" in planned
        rows.append({**run, "FLOPs equal": "yes" if planned["flops_equal"] else "NO",
                     "predicted peak (MiB)": f"{planned['peak_bytes_predicted'] / 2**20:.2f}" if has_peak else "",
                     "measured peak (MiB)": f"{planned['peak_bytes_measured'] / 2**20:.2f}" if has_peak else "",
                     "gap (%)": f"{planned['peak_gap_pct']:+.3f}" if has_peak else "",
                     "memory measured as": planned.get("peak_kind", ""), "plan (s)": f"{planned['plan_time_s']:.1f}"})
    return rows


def plan_markdown(records: list[dict]) -> str:
    intro = ("Every profiled run plans its own setting after measuring it (`run_bench.py --plan`'s code, one training "
             "step traced on fake tensors) and keeps the prediction in its record (`profile.plan`): FLOPs must equal "
             "the measured ones; peak memory is compared in the measurement's own convention (CPU profiler live "
             "bytes; on a GPU the CUDA model's `memory_reserved`). Generated by `python -m bench.reporting.report`.")
    return markdown_page("Cost plan against measurement", intro, plan_rows(records),
                         empty="No run holds a plan (records made before plans were recorded, or profiling off).")


def kind_markdown(agg: pd.DataFrame) -> str:
    intro = (f"{KINDS_LEGEND} Cells: mean ± sample std over seeds. Generated by "
             "`python -m bench.reporting.report`.")
    return markdown_page("Test macro-F1 (%) per kind of attribute", intro, kind_table(agg),
                         empty="No run with test metrics.")


def frames_tables(agg: pd.DataFrame, metric: str) -> list[tuple[dict, pd.DataFrame]]:
    """VTF Table 3 layout per (dataset, backbone, batch size, world size, precision, switches): strategies x frame
    counts, mean F1 over seeds."""
    keys = ["dataset", "backbone", "batch_size", "world_size", "precision", "switches"]
    tables = []
    for values, part in agg.groupby([agg[k].astype("object") for k in keys], dropna=False, sort=True):
        if part[f"{metric}_mean"].isna().all():
            continue
        table = part.pivot_table(index="strategy", columns="frames", values=f"{metric}_mean", aggfunc="mean")
        frames = sorted({int(f) for f in part["frames"].dropna()})
        table = table.reindex(index=strategy_order(part["strategy"]), columns=frames)
        table.columns = [f"{f} frame" if f == 1 else f"{f} frames" for f in frames]
        table = table.dropna(how="all")  # profile-only strategies have no F1 at any frame count
        tables.append((dict(zip(keys, values, strict=True)), table))
    return tables


def frames_markdown(agg: pd.DataFrame) -> str:
    lines = ["# Test F1 (%) vs number of input frames -- VTF Table 3 layout", "",
             "Cells: mean over seeds (seed counts in summary.md). Generated by `python -m bench.reporting.report`.", ""]
    for metric, label in (("paper_f1", "paper-F1"), ("macro_f1", "macro-F1")):
        for setting, table in frames_tables(agg, metric):
            ranks = f" over {setting['world_size']} ranks" if setting["world_size"] > 1 else ""
            lines += [f"## {label}: dataset {setting['dataset']}, backbone {setting['backbone']}, "
                      f"batch {setting['batch_size']}{ranks}, {setting['precision']}", "",
                      tabulate(_percent_table(table.rename_axis("strategy")), headers="keys", tablefmt="github",
                               disable_numparse=True), ""]
    if len(lines) == 4:
        lines += ["No run with test metrics.", ""]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda handle: handle.write(text))


def _write_csv(path: Path, frame: pd.DataFrame, *, index: bool = False) -> Path:
    return write_atomic(path, lambda handle: frame.to_csv(handle, index=index, lineterminator="\n"))


def write_tables(frame: pd.DataFrame, agg: pd.DataFrame, scan: Scan, out: Path, *, source: str) -> list[Path]:
    """summary.{csv,md,tex}, per-attribute F1 (VTF Table 2), frames ablation (VTF Table 3) and statistics."""
    statistics_files, in_words = statistics.write_statistics(scan.records, out)
    written = [*statistics_files, _write_csv(out / "summary.csv", frame),
               _write_text(out / "summary.md", summary_markdown(frame, agg, scan, source=source) + in_words),
               _write_text(out / "summary.tex", summary_latex(agg))]
    setting = reference_setting(frame) or dict.fromkeys(SETTING)
    columns = attribute_table(attribute_f1(scan.records, level="column"), setting)
    groups = attribute_table(attribute_f1(scan.records, level="group"), setting)
    written += [_write_text(out / "per_attribute_f1.md", attribute_markdown(columns, groups, setting)),
                _write_csv(out / "per_attribute_f1.csv", columns, index=True),
                _write_csv(out / "per_group_f1.csv", groups, index=True)]
    ablation = agg[["strategy", "dataset", "backbone", "batch_size", "precision", "frames", "seeds", "paper_f1_mean",
                    "paper_f1_std", "macro_f1_mean", "macro_f1_std"]]
    written += [_write_text(out / "plan_vs_measured.md", plan_markdown(scan.records)),
                _write_text(out / "per_kind_f1.md", kind_markdown(agg)),
                _write_text(out / "frames_ablation.md", frames_markdown(agg)),
                _write_csv(out / "frames_ablation.csv", ablation)]
    return written
