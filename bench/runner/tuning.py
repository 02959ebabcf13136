"""``--tune``: a small grid of training hyperparameters per strategy, chosen on the validation split only.

A comparison is only as fair as each method's hyperparameters, and tuning is part of what a method costs. Every grid
point of every run of the sweep is a run like any other (it resumes, runs in the pool and on every launcher), under
protocol ``val-only``: its test split is never built, so the choice cannot read it. Per strategy, the point with the
highest mean validation ``select_metric`` over the sweep's seeds is chosen (ties: the first in grid order); the
sweep's own runs then train with it and score the test split once, as always. Written under ``OUT/tuning/``: the
grid's run records and ``tuning.json`` (per strategy: the grid, each point's validation scores, the choice and the
grid's cost: runs, training hours and steps, the largest peak memory).

    python run_bench.py --strategies frozen,full,side --tune lr=3e-4,1e-3,3e-3 --tune backbone_lr_scale=0.01,0.1,1
"""
from __future__ import annotations

import dataclasses
import itertools
import statistics
from pathlib import Path

from bench.config import ConfigError, RunConfig, merge
from bench.records import now_iso, write_json_atomic
from bench.runner.sweep import RunSpec
from strategies import registry

TUNING_FOLDER = "tuning"
TUNING_KIND = "tuning"
TUNING_SCHEMA = 1
GRID_PROTOCOL = "val-only"


@dataclasses.dataclass(frozen=True)
class Axis:
    """One tuned ``train`` key and the values it takes."""

    key: str
    values: tuple[float, ...]


def parse_axis(text: str) -> Axis:
    """``lr=1e-4,3e-4,1e-3`` -> Axis; one line naming what was expected otherwise (argparse's type function)."""
    key, sep, values = text.partition("=")
    key = key.strip().removeprefix("train.")
    if not sep or key not in registry.HYPERPARAMETERS:
        raise ValueError(f"--tune {text!r}: expected KEY=V1,V2,... with KEY one of "
                         f"{', '.join(registry.HYPERPARAMETERS)}")
    try:
        numbers = tuple(dict.fromkeys(float(v) for v in values.split(",") if v.strip()))
    except ValueError:
        raise ValueError(f"--tune {text!r}: expected numbers after '{key}=', e.g. {key}=1e-4,3e-4,1e-3") from None
    if not numbers or any(v < 0 or v != v for v in numbers) or (key == "lr" and 0 in numbers):
        raise ValueError(f"--tune {text!r}: expected non-negative values{' above 0' if key == 'lr' else ''}")
    return Axis(key, numbers)


def grid_points(axes: list[Axis]) -> list[dict[str, float]]:
    """Every combination of the axes' values, in the order given (a key named twice: its last axis counts)."""
    axes = list({axis.key: axis for axis in axes}.values())
    keys = [axis.key for axis in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axis.values for axis in axes))]


def point_label(point: dict[str, float]) -> str:
    """A grid point as a file-name-safe run-id suffix, e.g. ``lr0.0003-backbone_lr_scale0.1``."""
    return "-".join(f"{key}{value:g}" for key, value in point.items())


def with_train(config: RunConfig, values: dict) -> RunConfig:
    """``config`` with some ``train`` fields replaced, validated like any config."""
    return RunConfig.from_dict(merge(config.to_dict(), {"train": values}))


@dataclasses.dataclass(frozen=True)
class GridRun:
    """One validation-only run of the grid: a sweep run's config at one grid point."""

    spec: RunSpec
    point: dict

    @property
    def strategy(self) -> str:
        return self.spec.config.strategy.name


def strategy_points(config: RunConfig, points: list[dict[str, float]]) -> list[dict[str, float]]:
    """The grid points that can change this run: ``backbone_lr_scale`` scales only the parameters a strategy
    trains that the model came with (``registry`` ``trains_existing``), so for any other strategy that axis takes
    the run's own value and equal points are run once."""
    if registry.get(config.strategy.registered).trains_pretrained:
        return points
    own = [{**p, "backbone_lr_scale": config.train.backbone_lr_scale} if "backbone_lr_scale" in p else p
           for p in points]
    return list({point_label(p): p for p in own}.values())


def grid_runs(specs: list[RunSpec], points: list[dict[str, float]]) -> list[GridRun]:
    """One validation-only run per sweep run and grid point that can change it."""
    if any(spec.config.train.protocol != "val" for spec in specs):
        raise ConfigError("--tune: chooses on the validation split, so the sweep's protocol must be 'val' (the "
                          "grid runs are 'val-only'); full-train has no validation split and test-select would "
                          "choose on the test split")
    return [GridRun(RunSpec(f"{spec.run_id}__tune-{point_label(point)}",
                            with_train(spec.config, {**point, "protocol": GRID_PROTOCOL})), point)
            for spec in specs for point in strategy_points(spec.config, points)]


def _validation_score(record: dict, metric: str) -> float | None:
    if "test" in (record.get("metrics") or {}):
        raise AssertionError(f"tuning: grid run {record['run'].get('id')} holds test metrics; the grid must never "
                             "read the test split")
    if record["run"].get("status") != "ok":
        return None
    return record["metrics"]["val"].get(metric)


def choose(grid: list[GridRun], records: list[dict]) -> dict[str, dict]:
    """Per strategy: every point's validation scores over seeds and the chosen point (highest mean; a point with a
    failed run cannot be chosen). Reads ``metrics.val`` only."""
    scores: dict[str, dict[str, tuple[dict, list]]] = {}
    for run, record in zip(grid, records, strict=True):
        score = _validation_score(record, run.spec.config.train.select_metric)
        scores.setdefault(run.strategy, {}).setdefault(point_label(run.point), (run.point, []))[1].append(score)
    chosen = {}
    for strategy, by_point in scores.items():
        rows = [{"values": point, "val_scores": scores_,
                 "val_mean": None if None in scores_ else statistics.fmean(scores_)}
                for point, scores_ in by_point.values()]
        usable = [row for row in rows if row["val_mean"] is not None]
        if not usable:
            raise ConfigError(f"--tune: every grid run of {strategy} failed; see {TUNING_FOLDER}/ for the records")
        best = max(usable, key=lambda row: row["val_mean"])  # max keeps the first of equal scores: grid order
        chosen[strategy] = {"points": rows, "chosen": best["values"]}
    return chosen


def tuned_specs(specs: list[RunSpec], chosen: dict[str, dict]) -> list[RunSpec]:
    """The sweep's runs with each strategy's chosen values."""
    return [RunSpec(spec.run_id, with_train(spec.config, chosen[spec.config.strategy.name]["chosen"]))
            for spec in specs]


def _cost(records: list[dict]) -> dict:
    profiles = [r.get("profile") or {} for r in records]
    peaks = [p["peak_mem_bytes"] for p in profiles if p.get("peak_mem_bytes") is not None]
    return {"runs": len(records), "runs_ok": sum(r["run"].get("status") == "ok" for r in records),
            "train_hours": sum(p.get("train_time_s") or 0.0 for p in profiles) / 3600,
            "train_steps": sum(p.get("train_steps") or 0 for p in profiles),
            "peak_mem_bytes_max": max(peaks) if peaks else None}


def summary(specs: list[RunSpec], grid: list[GridRun], records: list[dict], chosen: dict[str, dict],
            axes: list[Axis]) -> dict:
    """The ``tuning.json`` document: per strategy its default values, every point's validation scores, the choice
    and what the grid cost."""
    strategies = {}
    for name, entry in chosen.items():
        own = [record for run, record in zip(grid, records, strict=True) if run.strategy == name]
        config = next(spec.config for spec in specs if spec.config.strategy.name == name)
        defaults = {axis.key: getattr(config.train, axis.key) for axis in axes}
        strategies[name] = {"defaults": defaults, **entry, "changed": entry["chosen"] != defaults, "cost": _cost(own)}
    return {"kind": TUNING_KIND, "schema_version": TUNING_SCHEMA, "created": now_iso(),
            "select_metric": specs[0].config.train.select_metric, "split": "val", "grid_protocol": GRID_PROTOCOL,
            "axes": {axis.key: list(axis.values) for axis in axes}, "strategies": strategies}


def write_summary(out: Path, document: dict) -> Path:
    path = Path(out) / TUNING_FOLDER / "tuning.json"
    write_json_atomic(path, document)
    return path
