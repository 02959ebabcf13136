"""The regression gate: compare a sweep's results with a committed baseline and fail on any regression.

Per strategy: accuracy (macro-F1, paper F1, mA) may not drop by more than an absolute tolerance; peak memory may not
rise by more than a relative tolerance; tunable / total parameters and FLOPs must be exactly equal unless the
strategy's configuration changed (then the change is reported, not failed). Tolerances live in the baseline file,
so loosening them is a reviewed change. A strategy missing from the run or from the baseline is a failure too.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tabulate import tabulate

from bench.results import ResultFileError, environment, git_state, write_json_atomic

BASELINE_VERSION = 1
ACCURACY = ("macro_f1", "paper_f1", "mA")
MEMORY = ("peak_mem_bytes",)
EXACT = ("params_trainable", "params_total", "fwd_flops_per_clip", "train_step_flops")
DEFAULT_TOLERANCES = {"accuracy_abs_drop": 0.02, "memory_rel_rise": 0.05}


@dataclass(frozen=True)
class Verdict:
    strategy: str
    metric: str
    baseline: float | None
    now: float | None
    verdict: str  # ok / REGRESSION / improved / changed-config / MISSING

    @property
    def failed(self) -> bool:
        return self.verdict in ("REGRESSION", "MISSING")


def strategy_signature(record: dict) -> str:
    """What may legitimately change parameter counts and FLOPs: the strategy, model, frames and batch size."""
    cfg = record["run"]["config"]
    key = {"strategy": cfg["strategy"], "model": cfg["model"], "frames": cfg["data"]["frames"],
           "batch_size": cfg["train"]["batch_size"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def summarise(record: dict) -> dict:
    test, prof = record.get("metrics", {}).get("test", {}), record.get("profile", {})
    entry = {key: test.get(key) for key in ACCURACY}
    entry.update({key: prof.get(key) for key in MEMORY + EXACT})
    entry["peak_mem_kind"] = prof.get("peak_mem_kind")
    entry["signature"] = strategy_signature(record)
    return entry


def make_baseline(records: list[dict], *, preset: str, tolerances: dict | None = None) -> dict:
    bad = [r["run"]["strategy"] for r in records if r["run"]["status"] != "ok"]
    if bad:
        raise ValueError(f"refusing to write a baseline from failed runs: {', '.join(bad)}")
    commit, dirty = git_state()
    env = environment()
    return {"baseline_version": BASELINE_VERSION, "preset": preset,
            "precision": sorted({r["run"]["config"]["train"].get("precision", "fp32") for r in records}),
            "provenance": {"git_commit": commit, "git_dirty": dirty, "torch": env["torch"], "cpu": env["cpu"],
                           "gpu": env["gpu"], "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "tolerances": {**DEFAULT_TOLERANCES, **(tolerances or {})},
            "strategies": {r["run"]["strategy"]: summarise(r) for r in records}}


def read_baseline(path: Path) -> dict:
    try:
        baseline = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ResultFileError(f"{path}: unreadable baseline ({error})") from None
    if baseline.get("baseline_version") != BASELINE_VERSION or "strategies" not in baseline:
        raise ResultFileError(f"{path}: not a baseline file of version {BASELINE_VERSION}")
    return baseline


def write_baseline(path: Path, baseline: dict) -> None:
    write_json_atomic(Path(path), baseline)


def _compare_metric(strategy: str, metric: str, base: dict, now: dict, tolerances: dict) -> Verdict:
    old, new = base.get(metric), now.get(metric)
    if old is None or new is None:
        verdict = "ok" if old is None and new is None else "MISSING"
    elif metric in ACCURACY:
        verdict = "REGRESSION" if new < old - tolerances["accuracy_abs_drop"] else ("improved" if new > old else "ok")
    elif metric in MEMORY:
        verdict = "REGRESSION" if new > old * (1 + tolerances["memory_rel_rise"]) else "ok"
    elif new == old:
        verdict = "ok"
    else:
        verdict = "changed-config" if base["signature"] != now["signature"] else "REGRESSION"
    return Verdict(strategy, metric, old, new, verdict)


def compare(records: list[dict], baseline: dict) -> list[Verdict]:
    """Every metric of every strategy in the run or the baseline, with its verdict."""
    tolerances = baseline["tolerances"]
    now = {r["run"]["strategy"]: r for r in records}
    verdicts = []
    for strategy in sorted(set(now) | set(baseline["strategies"])):
        if strategy not in baseline["strategies"]:
            verdicts.append(Verdict(strategy, "(not in baseline)", None, None, "MISSING"))
        elif strategy not in now or now[strategy]["run"]["status"] != "ok":
            status = now[strategy]["run"]["error"] if strategy in now else "not in this run"
            verdicts.append(Verdict(strategy, f"(run: {status})", None, None, "MISSING"))
        else:
            current = summarise(now[strategy])
            for metric in ACCURACY + MEMORY + EXACT:
                verdicts.append(_compare_metric(strategy, metric, baseline["strategies"][strategy], current,
                                                tolerances))
    return verdicts


def _delta(v: Verdict) -> str:
    if v.baseline is None or v.now is None:
        return "-"
    if v.metric in MEMORY + EXACT and v.baseline:
        return f"{100.0 * (v.now - v.baseline) / v.baseline:+.2f}%"
    return f"{v.now - v.baseline:+.4f}"


def verdict_table(verdicts: list[Verdict]) -> str:
    rows = [[v.strategy, v.metric, v.baseline, v.now, _delta(v), v.verdict] for v in verdicts]
    return tabulate(rows, headers=["strategy", "metric", "baseline", "now", "delta", "verdict"],
                    tablefmt="github", floatfmt=".4f", missingval="-")


def failure_lines(verdicts: list[Verdict]) -> list[str]:
    return [f"{v.strategy}: {v.metric} {v.verdict} (baseline {v.baseline}, now {v.now}, delta {_delta(v)})"
            for v in verdicts if v.failed]
