"""Result files: one versioned JSON per run, written atomically, plus the run's environment and provenance.

Schema (``SCHEMA_VERSION``): ``{"schema_version", "run": {id, strategy, family, status, error, config,
config_digest, git_commit, git_dirty, started_at, finished_at, duration_s}, "metrics": {"val": ..., "test": ...,
"majority_test": ..., "best_epoch", "history"}, "profile": {...units in key names...}, "weights": {source, format,
activation, activation_from, weights_activation, path, sha256, tag}, "environment": {...}}``.

Version 2 (this one): ``run.config.strategy.params`` holds every field of the strategy's config with its default
(version 1 held only the overrides, so a changed default went unnoticed), ``metrics.val`` is the chosen
checkpoint's validation score (version 1: the last epoch's), and ``weights`` and library versions were added.
Version 1 files are still read (reports of older sweeps), but never reused by resume: their config digest differs.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
ROOT = Path(__file__).resolve().parent.parent


class ResultFileError(ValueError):
    """A result file cannot be read or has the wrong schema."""


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


def read_result(path: Path) -> dict:
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultFileError(f"{path}: unreadable result file ({error})") from None
    if not isinstance(payload, dict):
        raise ResultFileError(f"{path}: expected a result record (a JSON object) at the top level, got "
                              f"{type(payload).__name__}")
    if payload.get("schema_version") not in READABLE_VERSIONS:
        raise ResultFileError(f"{path}: schema_version {payload.get('schema_version')!r}, expected one of "
                              f"{READABLE_VERSIONS}")
    run = payload.get("run")
    if not isinstance(run, dict) or not all(isinstance(run.get(key), str) for key in ("id", "status")):
        raise ResultFileError(f"{path}: 'run' must be an object with the run's 'id' and 'status'")
    return payload


def git_state() -> tuple[str | None, bool | None]:
    """Commit hash and dirty flag of the project checkout (None where git is unavailable)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


LIBRARIES = ("torchvision", "open_clip_torch", "peft", "numpy", "pandas", "safetensors")


def library_versions() -> dict:
    """Installed versions of the libraries a result depends on (peft's decides the LoRA-on-attention path)."""
    from importlib import metadata

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **library_versions(),
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
