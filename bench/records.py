"""The result record: one versioned JSON per run. Its schema, and the only code that builds, validates, reads and
writes result files, so the sweep, its launchers, the reports and the gate agree on what a record is.

Schema (``SCHEMA_VERSION``): ``{"schema_version", "run": {id, strategy, family, status, error, config,
config_digest, git_commit, git_dirty, started_at, finished_at, duration_s, placement}, "metrics": {"val": ...,
"test": ..., "majority_test": ..., "best_epoch", "history", "own_params_effect", "test_predictions"}, "profile":
{...units in key names...}, "weights": {source, format, activation, activation_from, weights_activation, path,
sha256, tag}, "environment": {...}}``. ``metrics``, ``profile`` and ``weights`` are what a finished run measured
(``OUTCOME``, returned by ``bench.runner.run.run_one``); a failed or preempted record leaves them empty.

Version 2 (this one): ``run.config.strategy.params`` holds every field of the strategy's config with its default
(version 1 held only the overrides, so a changed default went unnoticed), ``metrics.val`` is the chosen
checkpoint's validation score (version 1: the last epoch's), and ``weights`` and library versions were added.
Version 1 files are still read (reports of older sweeps), but never reused by resume: their config digest differs.

A result folder holds ``<run_id>.json`` per run and, where a retry failed after a good result, that failure beside
it as ``<run_id>.failed.json`` (``settle``: a failure never replaces a good result). This module imports nothing
of the project, so every room may use it.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from bench.config import RunConfig

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
SECTIONS = ("run", "metrics", "profile", "environment", "weights")  # after "schema_version", as written
RUN_KEYS = ("id", "strategy", "family", "status", "error", "config", "config_digest", "git_commit", "git_dirty",
            "started_at", "finished_at", "duration_s", "placement")
REQUIRED_RUN_KEYS = ("id", "status")  # strings in every readable record
OUTCOME = ("metrics", "profile", "weights")  # what a finished run fills in
OK, FAILED, PREEMPTED = "ok", "failed", "preempted"  # run.status: preempted runs are always run again
FAILED_SUFFIX = ".failed.json"


class ResultFileError(ValueError):
    """A result file cannot be read or has the wrong schema."""


def now_iso() -> str:
    """The record's timestamps: UTC, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_record(cfg: RunConfig, *, run_id: str, status: str, placement: dict, environment: dict,
               git: tuple[str | None, bool | None], error: str | None = None, started_at: str | None = None,
               duration_s: float | None = None) -> dict:
    """A record with every section present: ``run`` filled in, the ``OUTCOME`` sections empty until the run
    returns them. Where and on what it ran (``placement``, ``environment``, ``git``) is measured by the caller."""
    commit, dirty = git
    run = {"id": run_id, "strategy": cfg.strategy.name, "family": cfg.strategy.registered, "status": status,
           "error": error, "config": cfg.to_dict(), "config_digest": cfg.digest(), "git_commit": commit,
           "git_dirty": dirty, "started_at": started_at, "finished_at": now_iso(), "duration_s": duration_s,
           "placement": placement}
    return {"schema_version": SCHEMA_VERSION, "run": run, "metrics": {}, "profile": {}, "environment": environment}


def validate_record(payload, path: Path) -> dict:
    """A readable record: an object of a readable version whose ``run`` names its id and status."""
    if not isinstance(payload, dict):
        raise ResultFileError(f"{path}: expected a result record (a JSON object) at the top level, got "
                              f"{type(payload).__name__}")
    if payload.get("schema_version") not in READABLE_VERSIONS:
        raise ResultFileError(f"{path}: schema_version {payload.get('schema_version')!r}, expected one of "
                              f"{READABLE_VERSIONS}")
    run = payload.get("run")
    if not isinstance(run, dict) or not all(isinstance(run.get(key), str) for key in REQUIRED_RUN_KEYS):
        raise ResultFileError(f"{path}: 'run' must be an object with the run's 'id' and 'status'")
    return payload


def read_result(path: Path) -> dict:
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultFileError(f"{path}: unreadable result file ({error})") from None
    return validate_record(payload, path)


def dig(mapping: dict, *keys):
    """``mapping[k1][k2]...`` or None where any level is missing: records of older versions lack sections."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def skip_reason(path: Path, cfg: RunConfig, *, retry_failed: bool = False) -> str | None:
    """Why a resumed sweep need not run ``cfg`` again (None: run it). A result counts only for an identical config
    digest; a failed one is kept unless ``retry_failed``, a preempted one is always run again."""
    if not path.exists():
        return None
    try:
        run = read_result(path)["run"]
    except ResultFileError as error:
        print(f"warning: {error}; the run is redone and the file replaced", flush=True)
        return None
    if run.get("config_digest") != cfg.digest():
        return None
    if run["status"] == OK:
        return "finished earlier, skipped"
    if run["status"] == FAILED and not retry_failed:
        return "failed earlier, skipped (--retry-failed runs it again)"
    return None


def is_finished(path: Path, cfg: RunConfig) -> bool:
    return skip_reason(path, cfg, retry_failed=True) is not None


def settle(record: dict, final: Path) -> dict:
    """Write ``record`` as the run's result without ever overwriting a good result with a failure: a failure beside
    a good result goes to ``<run_id>.failed.json``. The one writer of result files for every launcher."""
    ok = record["run"]["status"] == OK
    keep_old = not ok and final.exists() and _is_ok(final)
    write_json_atomic(final.with_suffix(FAILED_SUFFIX) if keep_old else final, record)
    if ok:
        final.with_suffix(FAILED_SUFFIX).unlink(missing_ok=True)
    return record


def _is_ok(path: Path) -> bool:
    try:
        return read_result(path)["run"]["status"] == OK
    except ResultFileError:
        return False


def write_atomic(path: Path, write: Callable[[IO], object], *, binary: bool = False) -> Path:
    """Write through ``write(handle)`` to a temporary file in the same folder, flush it to disk, then rename: readers
    never see half a file, and a failure (a full disk, Ctrl-C) leaves the previous file as it was and no temporary
    file behind. Every result and report file goes through here. An OSError names ``path``, not the temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, payload: dict) -> None:
    write_atomic(path, lambda handle: json.dump(payload, handle, indent=2, sort_keys=False, default=_jsonable))


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
