"""Mirror a run's record to TensorBoard, MLflow and Weights & Biases, for people who follow runs in those tools.

The JSON record stays the only source of truth: resume, reports and the gate read nothing else. A mirror is a copy
written after the record and rebuilt from it at any time (``python -m bench.reporting.trackers``), so each tool
shows the same numbers under the same names, whichever wrote them:

* ``history/<key>`` for each epoch of ``metrics.history`` (train loss, the validation metric, elapsed seconds),
  with the epoch as the step;
* ``<split>/<metric>`` for the headline numbers of every scored split (``test``, ``val``, ``majority_test``,
  ``train_subset``), ``test/per_group/<group>/<metric>`` for the test split's attribute groups (VTF Table 2;
  per-column figures stay in the JSON), ``best_epoch``, ``run/duration_s`` and ``profile/<key>`` for every cost
  figure (the record's key names carry the units: ``_bytes``, ``_ms``, ``_s``, ``flops``), all at the step of the
  checkpoint they describe (``best_epoch``; 0 where no epoch was trained);
* the resolved config (``run.config``), flattened to dotted names, as hyper-parameters, and the run's id, strategy,
  status and config digest as labels.

Where the files go, under the sweep's folder: TensorBoard event files in ``tensorboard/<run_id>/``, an MLflow store
in ``mlruns/`` (SQLite, ``mlflow.db``: MLflow 3.17 refuses its plain file store by default), W&B offline runs in
``wandb/`` (``wandb sync`` uploads them later). Nothing goes to a network: W&B runs offline, MLflow's telemetry and
W&B's error reports are switched off. Mirroring a run again replaces its earlier mirror (a resumed, retried or
re-mirrored run appears once). The tools' packages are optional (``pip install -e ".[trackers]"``) and imported only
by the writer that needs them.

This module sits in ``measure`` (it needs only ``bench.records``) because the worker, in ``runner``, calls it as a
run ends, and ``runner`` may not import ``reporting``; the command over a folder is ``bench.reporting.trackers``.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bench.records import OK, SCORED_SPLITS, dig

TRACKERS = ("tensorboard", "mlflow", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker -> module it needs
INSTALL_HINT = 'pip install -e ".[trackers]"'
TRACK_ENV = "PAR_BENCH_TRACK"  # the trackers a sweep's workers mirror to, comma-separated (set by run_bench --track)
TRACK_DIR_ENV = "PAR_BENCH_TRACK_DIR"  # the sweep's --out folder, under which the mirrors go
GROUPED_SPLITS = ("test",)  # splits whose per-group figures are mirrored
PROJECT = "vpar-peft-bench"  # the W&B project and the prefix of the MLflow experiment
LABELS = (("run_id", "id"), ("strategy", "strategy"), ("family", "family"), ("status", "status"),
          ("config_digest", "config_digest"), ("git_commit", "git_commit"))  # label name, key of record["run"]
WARNING_CHARS = 300  # a tracker's error message is cut to this length in its warning line


def parse_names(text: str) -> tuple[str, ...]:
    """``"tensorboard,mlflow"`` -> the tracker names in order, each once; ValueError naming any unknown one."""
    names = tuple(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in TRACKERS]
    if unknown or not names:
        raise ValueError(f"unknown tracker {', '.join(unknown) or repr(text)}: expected some of "
                         f"{', '.join(TRACKERS)}, comma-separated")
    return names


def names_argument(text: str) -> tuple[str, ...]:
    """``parse_names`` as an argparse type: an unknown name is argparse's one-line error, exit 2."""
    import argparse

    try:
        return parse_names(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def require_installed(names: tuple[str, ...]) -> None:
    """Refuse, before any work, a tracker whose package is missing: one line naming it and the extra to install.
    Looked up without importing, so the check costs nothing."""
    missing = [name for name in names if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise ValueError(f"tracker {', '.join(missing)}: package {', '.join(PACKAGES[n] for n in missing)} not "
                         f"installed; install the optional trackers with {INSTALL_HINT}")


# --- what is mirrored: the same names and values for every tool ---------------------------------------------------

def _numbers(mapping: dict | None, prefix: str = "") -> dict[str, float]:
    """The numbers (not flags) directly in ``mapping``, named ``prefix/key`` (``key`` without a prefix)."""
    return {f"{prefix}/{key}" if prefix else key: value for key, value in (mapping or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def history_steps(record: dict) -> list[tuple[int, dict[str, float]]]:
    """(epoch, {``history/<key>``: value}) per trained epoch: the curves."""
    return [(entry["epoch"], _numbers({k: v for k, v in entry.items() if k != "epoch"}, "history"))
            for entry in dig(record, "metrics", "history") or [] if isinstance(entry.get("epoch"), int)]


def final_figures(record: dict) -> dict[str, float]:
    """Every final number of the record: scores per split (and per group for ``GROUPED_SPLITS``), the chosen
    epoch, the run's duration and its cost figures."""
    metrics = record.get("metrics") or {}
    figures = {}
    for split in SCORED_SPLITS:
        figures |= _numbers(metrics.get(split), split)
    for split in GROUPED_SPLITS:
        for group, scores in (dig(metrics, split, "per_group") or {}).items():
            figures |= _numbers(scores, f"{split}/per_group/{group}")
    figures |= _numbers({"best_epoch": metrics.get("best_epoch")})
    figures |= _numbers({"duration_s": dig(record, "run", "duration_s")}, "run")
    return figures | _numbers(record.get("profile"), "profile")


def final_step(record: dict) -> int:
    """The step of the final figures: the epoch whose checkpoint they describe (0: no epoch trained)."""
    best = dig(record, "metrics", "best_epoch")
    return best if isinstance(best, int) else 0


def hyperparameters(record: dict) -> dict[str, bool | int | float | str]:
    """The resolved config, flattened to dotted names; values other than plain scalars (None, lists) as JSON text,
    which every tool takes."""
    flat = {}

    def walk(mapping: dict, prefix: str) -> None:
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(value, f"{name}.")
            else:
                flat[name] = value if isinstance(value, bool | int | float | str) else json.dumps(value)

    walk(dig(record, "run", "config") or {}, "")
    return flat


def labels(record: dict) -> dict[str, str]:
    """What names the run (id, strategy, status, config digest, commit): tags and run names in the tools."""
    run = record.get("run") or {}
    return {label: str(run[key]) for label, key in LABELS if run.get(key) is not None}


def _seconds(stamp: str | None) -> float | None:
    """An ISO timestamp of the record as POSIX seconds (None where absent or unreadable)."""
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def epoch_times(record: dict) -> dict[int, float | None]:
    """Wall time of each epoch's end (start + elapsed), so the tools' time axes are the run's, not the mirror's."""
    start, times = _seconds(dig(record, "run", "started_at")), {}
    for epoch, values in history_steps(record):
        elapsed = values.get("history/elapsed_s")
        times[epoch] = start + elapsed if start is not None and elapsed is not None else None
    return times


def _status_text(record: dict) -> str:
    run = record.get("run") or {}
    return run.get("status", "?") + (f": {run['error']}" if run.get("error") else "")


# --- the writers: one per tool ------------------------------------------------------------------------------------

def to_tensorboard(record: dict, out: Path) -> Path:
    """Event files in ``out/tensorboard/<run_id>/``: scalars, the status as text, the config as hyper-parameters
    (HParams tab) with the test headline metrics. Earlier event files of the run are replaced."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    folder = Path(out) / "tensorboard" / record["run"]["id"]
    for earlier in folder.glob("events.out.tfevents.*"):
        earlier.unlink()
    times, step, final = epoch_times(record), final_step(record), final_figures(record)
    end = _seconds(dig(record, "run", "finished_at"))
    with SummaryWriter(log_dir=str(folder)) as writer:
        for epoch, values in history_steps(record):
            for name, value in values.items():
                writer.add_scalar(name, value, epoch, walltime=times.get(epoch))
        for name, value in final.items():
            writer.add_scalar(name, value, step, walltime=end)
        writer.add_text("run/status", _status_text(record), step, walltime=end)
        headline = {name: value for name, value in final.items() if name.count("/") == 1 and name.startswith("test/")}
        for summary in hparams(hyperparameters(record) | labels(record), headline):
            writer.file_writer.add_summary(summary, step, walltime=end)
    return folder


@contextlib.contextmanager
def _exclusive(lock_file: Path):
    """One writer at a time in a store that several workers of a sweep (``--jobs``) share."""
    import fcntl

    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


MLFLOW_BATCH = {"metrics": 1000, "params": 100}  # MLflow's limits per log_batch call
MLFLOW_TAG_CHARS = 5000  # at most this much of an error message goes into a tag (MLflow's limit is above it)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def _mlflow_name(name: str) -> str:
    """MLflow takes letters, digits, ``_ - . / :`` and spaces in metric and param names; anything else -> ``_``."""
    return re.sub(r"[^\w\-./: ]", "_", name)


def _mlflow_client(store: Path):
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # before the import: no usage reports leave the machine
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not the store's "creating tables" lines
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def _mlflow_experiment(client, out: Path, store: Path) -> str:
    """The experiment of this sweep folder (named after it), its artifacts kept in the store's folder."""
    name = f"{PROJECT}/{Path(out).name}"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=(store / "artifacts").as_uri())


def to_mlflow(record: dict, out: Path) -> Path:
    """One MLflow run in the store ``out/mlruns/mlflow.db``: metrics (history with the epoch as step), the config as
    params, labels as tags, finished or failed as its status. An earlier mirror of the run is deleted first."""
    from mlflow.entities import Metric, Param

    store = Path(out) / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    run_id = record["run"]["id"]
    with _exclusive(store / ".lock"):
        client = _mlflow_client(store)
        experiment = _mlflow_experiment(client, out, store)
        quoted = run_id.replace("'", "\\'")
        for earlier in client.search_runs([experiment], filter_string=f"tags.`bench.run_id` = '{quoted}'"):
            client.delete_run(earlier.info.run_id)
        start, end = _seconds(dig(record, "run", "started_at")), _seconds(dig(record, "run", "finished_at"))
        tags = {f"bench.{label}": value for label, value in labels(record).items()}
        run = client.create_run(experiment, start_time=_ms(start), run_name=run_id, tags=tags)
        times, step = epoch_times(record), final_step(record)
        metrics = [Metric(_mlflow_name(name), value, _ms(times.get(epoch) or end) or 0, epoch)
                   for epoch, values in history_steps(record) for name, value in values.items()]
        metrics += [Metric(_mlflow_name(name), value, _ms(end) or 0, step)
                    for name, value in final_figures(record).items()]
        params = [Param(_mlflow_name(name), str(value)) for name, value in hyperparameters(record).items()]
        for chunk in _chunks(metrics, MLFLOW_BATCH["metrics"]):
            client.log_batch(run.info.run_id, metrics=chunk)
        for chunk in _chunks(params, MLFLOW_BATCH["params"]):
            client.log_batch(run.info.run_id, params=chunk)
        if dig(record, "run", "error"):
            client.set_tag(run.info.run_id, "bench.error", str(record["run"]["error"])[:MLFLOW_TAG_CHARS])
        ok = dig(record, "run", "status") == OK
        client.set_terminated(run.info.run_id, status="FINISHED" if ok else "FAILED", end_time=_ms(end))
    return store


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def wandb_id(record: dict, out: Path) -> str:
    """A W&B run id that is the same each time this run of this folder is mirrored (so a new mirror replaces the
    old one) and differs between folders (two sweeps' runs of one name stay apart once synced)."""
    safe = re.sub(r"[:;,#?/'\s]", "-", record["run"]["id"])
    folder = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:8]
    return f"{safe}-{folder}"


def _wandb_runs(folder: Path, run_key: str) -> list[Path]:
    """The offline runs W&B wrote for ``run_key`` (``offline-run-<YYYYMMDD_HHMMSS>-<id>``), and no other run's."""
    name = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run_key)}")
    return [path for path in folder.glob("offline-run-*") if name.fullmatch(path.name)]


def to_wandb(record: dict, out: Path) -> Path:
    """An offline W&B run in ``out/wandb/offline-run-<time>-<id>/``: history with the epoch as step, the final
    figures as the run's summary, the config and labels as its config, failed runs with exit code 1. Earlier offline
    runs of this run are replaced. ``wandb sync out/wandb/offline-run-*`` uploads them when you choose to."""
    os.environ["WANDB_MODE"] = "offline"  # before the import: never a network call, whatever the user's settings
    os.environ["WANDB_ERROR_REPORTING"] = "false"
    import wandb

    run_key = wandb_id(record, out)
    for earlier in _wandb_runs(Path(out) / "wandb", run_key):
        shutil.rmtree(earlier)
    settings = wandb.Settings(mode="offline", silent=True, console="off", save_code=False, disable_git=True,
                              x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True)
    run = wandb.init(dir=str(out), project=PROJECT, group=Path(out).name, name=record["run"]["id"], id=run_key,
                     config={**(dig(record, "run", "config") or {}), "bench": labels(record)},
                     tags=[labels(record).get("status", "?")], settings=settings, reinit="create_new")
    try:
        for epoch, values in history_steps(record):
            run.log({**values, "epoch": epoch}, step=epoch)
        run.summary.update({**final_figures(record), "status": _status_text(record)})
    finally:
        run.finish(exit_code=0 if dig(record, "run", "status") == OK else 1)
    return Path(run.dir).parent


WRITERS: dict[str, Callable[[dict, Path], Path]] = {"tensorboard": to_tensorboard, "mlflow": to_mlflow,
                                                    "wandb": to_wandb}


def mirror(record: dict, out: Path, names: tuple[str, ...]) -> list[str]:
    """Mirror one record to each tracker in ``names``; the trackers that failed. A failure is one warning line on
    stderr naming the run, the tracker and the error, never an exception: the record is already written."""
    failed = []
    for name in names:
        try:
            WRITERS[name](record, Path(out))
        except Exception as error:  # a mirror is a convenience: its failure never touches the run
            message = " ".join(f"{type(error).__name__}: {error}".split())[:WARNING_CHARS]
            print(f"warning: run {dig(record, 'run', 'id')}: not mirrored to {name}: {message}", file=sys.stderr,
                  flush=True)
            failed.append(name)
    return failed


def from_environment(environ=os.environ) -> tuple[tuple[str, ...], Path | None]:
    """The trackers and folder a sweep asked its workers to mirror to (``TRACK_ENV``, ``TRACK_DIR_ENV``); no
    trackers where the variables are unset (the default: nothing is mirrored)."""
    names, folder = environ.get(TRACK_ENV, ""), environ.get(TRACK_DIR_ENV)
    if not names.strip() or not folder:
        return (), None
    return parse_names(names), Path(folder)
