"""The result record: one versioned JSON per run. Its schema, and the only code that builds, validates, reads and
writes result files, so the sweep, its launchers, the reports and the gate agree on what a record is.

Schema (``SCHEMA_VERSION``): ``{"schema_version", "run": {id, strategy, family, status, error, config,
config_digest, git_commit, git_dirty, started_at, finished_at, duration_s, placement, preemptions}, "metrics":
{"val": ..., "test": ..., "majority_test": ..., "train_subset": ..., "best_epoch", "history", "own_params_effect",
"test_predictions"}, "profile": {...units in key names...}, "environment": {...}, "code": {commit, dirty,
source_sha256, covers}, "weights": {source, format, activation, activation_from, weights_activation, path, sha256,
tag}}``. ``metrics``, ``profile`` and ``weights`` are what a finished run measured (``OUTCOME``, returned by
``bench.training.run.run_one``); a failed or preempted record leaves them empty.

Version 3 (this one): ``code`` names the code a record was made by (bench/measure/environment.py ``code_state``: git
commit and dirty flag where git is available, and ``source_sha256``, a digest of the source files on disk that decide
results, which works without git), and ``metrics.train_subset`` holds the metrics of a fixed subset of the training
clips evaluated like the test split (bench/measure/generalisation.py), which the gate compares with the test figures.
Version 2 records lack both and are otherwise the same: they are read, and a resume outside the gate keeps them
(their config digest is unchanged); the gate redoes them (they name no code), and a version 2 record about to be
replaced is set aside. Version 2 added to version 1: ``run.config.strategy.params`` holds every field of the
strategy's config with its default (version 1 held only the overrides, so a changed default went unnoticed),
``metrics.val`` is the chosen checkpoint's validation score (version 1: the last epoch's), and ``weights`` and
library versions. Version 1 files are still read (reports of older sweeps), but never reused by resume: their config
digest differs.

Reading: every reader takes a record through one view, ``row`` (strategy, seed, setting, test scores, profile
figures with their units), and one definition of which runs may be compared, ``setting_of``. Reports read files
with ``read_record``, which brings versions 1 and 2 to this one (``upgrade``, in memory; the file is unchanged) and
refuses any other version in one line naming the file, its version and the versions read.

A result folder holds ``<run_id>.json`` per run and, where a retry failed after a good result, that failure beside
it as ``<run_id>.failed.json`` (``settle``: a failure never replaces a good result). This module imports nothing
of bench (of the project, only the attribute kinds of ``data.schema``), so every room may use it.

Nothing the harness finds is destroyed: a result file it is about to replace and cannot read, of another schema
version, or whose values are not what ``FIELDS`` says, is first moved, byte for byte, into ``set-aside/`` beside it
under a name that says why (``<name>.unreadable.json``, ``<name>.schema-v9.json``, ``<name>.invalid.json``), and
one line on stderr names both paths. A version 1 record is set aside too when its run is redone: it cannot be
upgraded (its strategy parameters lack the defaults, so its config digest never matches), and it is the only copy
of what that sweep measured. So is a record the gate will not resume because other code made it
(``<name>.other-code.json``). Records in ``set-aside/`` are never read as results.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bench.errors import BenchError
from data.schema import KINDS

if TYPE_CHECKING:
    from bench.config import RunConfig

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
RESUMABLE_VERSIONS = (2, 3)  # version 2 lacks only what version 3 added: its config digest still identifies the run
SECTIONS = ("run", "metrics", "profile", "environment", "code", "weights")  # after "schema_version", as written
RUN_KEYS = ("id", "strategy", "family", "status", "error", "config", "config_digest", "git_commit", "git_dirty",
            "started_at", "finished_at", "duration_s", "placement")  # and "preemptions" once preempted (settle)
REQUIRED_RUN_KEYS = ("id", "status")  # strings in every readable record
OUTCOME = ("metrics", "profile", "weights")  # what a finished run fills in
OK, FAILED, PREEMPTED = "ok", "failed", "preempted"  # run.status: preempted runs are run again ...
MAX_PREEMPTIONS = 3  # ... until preempted this many times in a row: then failed (``count_preemption``)
FAILED_SUFFIX = ".failed.json"
OTHER_CODE = "other-code"  # set-aside name of a record the gate will not resume: made by other source files
OTHER_SETTING = "other-setting"  # set-aside name of a finished run of another setting a sweep was told to replace
SET_ASIDE = "set-aside"  # sub-folder of a result folder: records kept, never read as results

TEXT, COUNT, NUMBER, FLAG, MAPPING = "a string", "an integer", "a number", "true or false", "an object"
FIELDS = {  # dotted path -> what its value is; None (or a missing key: older records) is always allowed
    "run": MAPPING, "metrics": MAPPING, "profile": MAPPING, "environment": MAPPING, "weights": MAPPING,
    **dict.fromkeys(("run.strategy", "run.family", "run.error", "run.config_digest", "run.git_commit",
                     "run.started_at", "run.finished_at"), TEXT),
    "run.git_dirty": FLAG, "run.duration_s": NUMBER, "run.preemptions": COUNT, "run.placement": MAPPING,
    "run.config": MAPPING,
    **dict.fromkeys(("run.config.strategy", "run.config.data", "run.config.model", "run.config.train"), MAPPING),
    "run.config.data.dataset": TEXT, "run.config.data.frames": COUNT, "run.config.model.backbone": TEXT,
    **dict.fromkeys(("run.config.train.seed", "run.config.train.batch_size", "run.config.train.world_size"), COUNT),
    "run.config.train.precision": TEXT, "metrics.best_epoch": COUNT,
    **dict.fromkeys(("profile.params_trainable", "profile.params_total", "profile.params_added",
                     "profile.peak_mem_bytes", "profile.activation_saved_bytes"), COUNT),
    **dict.fromkeys(("profile.fwd_flops_per_clip", "profile.train_step_flops", "profile.step_time_ms_median",
                     "profile.throughput_clips_per_s", "profile.train_time_s", "profile.eval_time_s",
                     "profile.train_subset_eval_time_s"), NUMBER),
    "profile.mode": TEXT, "profile.peak_mem_kind": TEXT, "profile.peak_mem_by_category_bytes": MAPPING,
    "environment.gpu": TEXT, "environment.cpu": TEXT, "environment.torch": TEXT,
    "code": MAPPING, "code.commit": TEXT, "code.dirty": FLAG, "code.source_sha256": TEXT,
}
# metrics.<split>: numbers, per_group / per_column: numbers
SCORED_SPLITS = ("test", "val", "majority_test", "train_subset")


class ResultFileError(BenchError, ValueError):
    """A result file cannot be read or has the wrong schema. ``kind`` says which, in the words a set-aside file is
    named with: ``unreadable``, ``schema-v<N>`` or ``invalid`` (values not what ``FIELDS`` says)."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind


class ResultAccessError(BenchError, ValueError):
    """A result file exists but this user may not read it: an environment error, never a reason to redo a run."""


def now_iso() -> str:
    """The record's timestamps: UTC, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_record(cfg: RunConfig, *, run_id: str, status: str, placement: dict, environment: dict, code: dict,
               error: str | None = None, started_at: str | None = None, duration_s: float | None = None) -> dict:
    """A record with every section present: ``run`` filled in, the ``OUTCOME`` sections empty until the run
    returns them. Where, on what and by which code it ran (``placement``, ``environment``, ``code``: commit, dirty,
    source_sha256, covers) is measured by the caller; ``run.git_*`` repeat the commit for older readers."""
    commit, dirty = code.get("commit"), code.get("dirty")
    run = {"id": run_id, "strategy": cfg.strategy.name, "family": cfg.strategy.registered, "status": status,
           "error": error, "config": cfg.to_dict(), "config_digest": cfg.digest(), "git_commit": commit,
           "git_dirty": dirty, "started_at": started_at, "finished_at": now_iso(), "duration_s": duration_s,
           "placement": placement}
    return {"schema_version": SCHEMA_VERSION, "run": run, "metrics": {}, "profile": {}, "environment": environment,
            "code": dict(code)}


def validate_record(payload, path: Path) -> dict:
    """A readable record: an object of a readable version whose ``run`` names its id and status, and whose values
    are of the kinds ``FIELDS`` gives, so every reader can use them without checking again."""
    if not isinstance(payload, dict):
        raise ResultFileError(f"{path}: expected a result record (a JSON object) at the top level, got "
                              f"{type(payload).__name__}", "unreadable")
    version = payload.get("schema_version")
    if not _is_count(version) or version not in READABLE_VERSIONS:
        raise version_error(path, version)
    run = payload.get("run")
    if not isinstance(run, dict) or not all(isinstance(run.get(key), str) for key in REQUIRED_RUN_KEYS):
        raise ResultFileError(f"{path}: 'run' must be an object with the run's 'id' and 'status'")
    if run["status"] not in (OK, FAILED, PREEMPTED):
        _bad_value(path, "run.status", run["status"], f"one of {OK!r}, {FAILED!r}, {PREEMPTED!r}")
    for field, kind in FIELDS.items():
        _check_value(path, field, dig(payload, *field.split(".")), kind)
    _check_scores(path, payload.get("metrics") or {})
    return payload


def version_error(path: Path, version) -> ResultFileError:
    """The one refusal of a record's version, naming the file, its version and the versions this harness reads."""
    if not _is_count(version):
        return ResultFileError(f"{path}: schema_version {version!r}, expected one of {READABLE_VERSIONS}",
                               "unreadable")
    newer = version > max(READABLE_VERSIONS)
    words = (f"{'newer' if newer else 'older'} than the versions this harness reads {READABLE_VERSIONS}"
             + ("; update the harness to read it" if newer else ""))
    return ResultFileError(f"{path}: schema_version {version}, {words}", f"schema-v{version}")


def _is_count(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


KIND_CHECKS = {TEXT: lambda v: isinstance(v, str), COUNT: _is_count, NUMBER: _is_number,
               FLAG: lambda v: isinstance(v, bool), MAPPING: lambda v: isinstance(v, dict)}


def _check_value(path: Path, field: str, value, kind: str) -> None:
    if value is not None and not KIND_CHECKS[kind](value):
        _bad_value(path, field, value, kind)
    if field == "profile.peak_mem_by_category_bytes" and isinstance(value, dict):
        for name, inner in value.items():
            _check_value(path, f"{field}.{name}", inner, COUNT)


def _check_scores(path: Path, metrics: dict) -> None:
    """``metrics.<split>``: every scalar a number; ``per_group`` / ``per_column``: a number per attribute and key."""
    for split in SCORED_SPLITS:
        scores = metrics.get(split)
        for key, value in (scores.items() if isinstance(scores, dict) else ()):
            if key in ("per_group", "per_column"):
                _check_table(path, f"metrics.{split}.{key}", value)
            elif not isinstance(value, dict):
                _check_value(path, f"metrics.{split}.{key}", value, NUMBER)


def _check_table(path: Path, field: str, table) -> None:
    _check_value(path, field, table, MAPPING)
    for name, row in (table or {}).items():
        _check_value(path, f"{field}.{name}", row, MAPPING)
        for key, value in (row or {}).items():
            _check_value(path, f"{field}.{name}.{key}", value, NUMBER)


def _bad_value(path: Path, field: str, value, expected: str):
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise ResultFileError(f"{path}: {field} is {shown}, expected {expected} (the result schema of bench/records.py); "
                          "correct the value or move the file out of the folder")


def read_result(path: Path) -> dict:
    """The record in ``path``. A file this user may not read is a ``ResultAccessError``; anything else that keeps it
    from being a record of a readable version is a ``ResultFileError`` whose ``kind`` says what."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except PermissionError as error:
        raise ResultAccessError(f"{path}: cannot be read ({error.strerror}); give yourself read permission or move "
                                "it out of the folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultFileError(f"{path}: unreadable result file ({error})", "unreadable") from None
    return validate_record(payload, path)


def dig(mapping: dict, *keys):
    """``mapping[k1][k2]...`` or None where any level is missing: records of older versions lack sections."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


_UNREAD = object()  # resume_decision reads the file itself


def resume_decision(path: Path, cfg: RunConfig, *, retry_failed: bool = False, source_sha256: str | None = None,
                    weights_sha256: str | None = None, record=_UNREAD) -> tuple[str | None, dict | None]:
    """(why a resumed sweep need not run ``cfg`` again, the record it keeps); (None, None): run it. A result counts
    only for an identical config digest; a failed one is kept unless ``retry_failed``, a preempted one is always
    run again. A file in the way that is not a resumable record is set aside first (``reusable_record``). Identity:
    ``identity_difference`` (config digest, and the weights' content where ``weights_sha256`` is given).

    ``source_sha256`` (the gate passes the current code's): a record made by other source files, or naming none, is
    no evidence about this code, so it is set aside (``<name>.other-code.json``, one line saying so) and run again."""
    record = reusable_record(path) if record is _UNREAD else record  # ``record``: read already (the sweep's plan)
    if record is None or identity_difference(record, cfg, weights_sha256) is not None:
        return None, None
    if record["run"]["status"] == PREEMPTED or (record["run"]["status"] == FAILED and retry_failed):
        return None, None
    if source_sha256 is not None and record_source(record) != source_sha256:
        _set_aside_other_code(Path(path), record, source_sha256)
        return None, None
    if record["run"]["status"] == OK:
        return "finished earlier, skipped", record
    return "failed earlier, skipped (--retry-failed runs it again)", record


# ---- reading a record: its setting and its one flat view (every report, the gate and the statistics) -----------

#: What sets runs apart in every table, figure, statistic and curve of a report: runs of one strategy differing only
#: in their seed are averaged, runs differing here never are (a bf16 run is not a second seed of an fp32 one).
SETTING = ("dataset", "backbone", "frames", "batch_size", "world_size", "batch_per_rank", "precision", "switches")
#: The CPU memory profiler's categories at the peak (bench/measure/profile.py), as ``peak_mem_<category>_bytes``.
MEMORY_CATEGORIES = ("params", "grads", "optimizer_state", "activations", "inputs", "temporaries",
                     "autograd_detail", "unknown")
#: ``metrics.test`` scores a row carries (fractions in [0, 1]): the paper, macro and mA protocols, per kind.
TEST_METRICS = ("paper_f1", "paper_precision", "paper_recall", "paper_acc", "macro_f1", "macro_acc",
                "macro_f1_identity", "mA", *(f"macro_f1_{kind}" for kind in KINDS))
#: ``profile`` figures a row carries, units in their names (counts, FLOPs = 2 x MACs, ``_bytes``, ``_ms``, ``_s``).
PROFILE_KEYS = ("params_trainable", "params_total", "params_added", "fwd_flops_per_clip", "train_step_flops",
                "peak_mem_bytes", "peak_mem_kind", "step_time_ms_median", "throughput_clips_per_s", "train_time_s",
                "eval_time_s", "activation_saved_bytes", *(f"peak_mem_{c}_bytes" for c in MEMORY_CATEGORIES))


def setting_of(record: dict) -> dict:
    """``SETTING``'s values of a run, in ``SETTING``'s order: the one definition of which runs may be compared.
    Records made before a field existed hold its default then (one rank, fp32, no switches)."""
    config = dig(record, "run", "config") or {}
    world, batch = dig(config, "train", "world_size") or 1, dig(config, "train", "batch_size")
    return {"dataset": dig(config, "data", "dataset"), "backbone": dig(config, "model", "backbone"),
            "frames": dig(config, "data", "frames"), "batch_size": batch, "world_size": world,
            "batch_per_rank": None if batch is None else batch // world,
            "precision": dig(config, "train", "precision") or "fp32",  # records before the field were all fp32
            "switches": switches_of(config)}


def row(record: dict) -> dict:
    """One record as the flat view every reader takes (tables, curves, the gate, the statistics): who ran (run id,
    strategy, family, status, seed), its setting (``setting_of``), where (device), how it decided (``threshold``),
    its test scores (``TEST_METRICS``), the majority-class level, the chosen epoch, the own-parameter probe (mean
    absolute change of the test probabilities) and the profile (``PROFILE_KEYS``). None where a section is missing:
    failed and profile-only runs, records older than a field (``upgrade`` brings older versions to this one)."""
    run, config = record.get("run") or {}, dig(record, "run", "config") or {}
    test, profile = dig(record, "metrics", "test") or {}, record.get("profile") or {}
    environment = record.get("environment") or {}
    flat = {"run_id": run.get("id"), "strategy": run.get("strategy"), "family": run.get("family"),
            "status": run.get("status"), "mode": profile.get("mode"), **setting_of(record),
            "device": environment.get("gpu") or environment.get("cpu"), "seed": dig(config, "train", "seed"),
            "threshold": dig(config, "train", "threshold"), "best_epoch": dig(record, "metrics", "best_epoch"),
            "majority_paper_f1": dig(record, "metrics", "majority_test", "paper_f1"),
            "majority_macro_f1": dig(record, "metrics", "majority_test", "macro_f1"),
            "own_params_effect": dig(record, "metrics", "own_params_effect", "prob_abs_change_mean"),
            "git_commit": run.get("git_commit"), "error": run.get("error")}
    flat.update({key: test.get(key) for key in TEST_METRICS})
    flat.update({key: profile.get(key) for key in PROFILE_KEYS})
    by_category = profile.get("peak_mem_by_category_bytes") or {}  # the only form in records before the flat keys
    flat.update({f"peak_mem_{c}_bytes": profile.get(f"peak_mem_{c}_bytes", by_category.get(c))
                 for c in MEMORY_CATEGORIES})
    return flat


def upgrade(record: dict, path: Path) -> dict:
    """``record`` (read from ``path``) in the current schema, so readers know one version: each older version is
    brought one step up by ``UPGRADES`` (a new dict; the file is left as it is, and ``upgraded_from`` names the
    version it holds). A version with no step up is refused: ``ResultFileError`` naming the file, its version and
    the versions read. Resume never upgrades: it decides by the version a file holds (``RESUMABLE_VERSIONS``)."""
    version = record.get("schema_version")
    if version == SCHEMA_VERSION:
        return record
    if not _is_count(version) or version not in UPGRADES:
        raise version_error(path, version)
    upgraded = {**UPGRADES[version](record), "upgraded_from": record.get("upgraded_from", version)}
    return upgrade(upgraded, path)


def _from_v1(record: dict) -> dict:
    """Version 1 -> 2: the sections version 2 added are empty (``weights``: unknown). What version 1 recorded
    differently stays as it was and ``upgraded_from`` says so: ``run.config.strategy.params`` holds only the
    overrides (so its config digest matches no run of this harness) and ``metrics.val`` is the last epoch's."""
    return {**record, "schema_version": 2, "weights": record.get("weights") or {}}


def _from_v2(record: dict) -> dict:
    """Version 2 -> 3: ``code`` from the git commit and dirty flag the run recorded; no source digest (version 2
    took none, so the gate still runs such a record again) and no ``metrics.train_subset``."""
    run = record.get("run") or {}
    code = {"commit": run.get("git_commit"), "dirty": run.get("git_dirty"), "source_sha256": None, "covers": None}
    return {**record, "schema_version": 3, "code": record.get("code") or code}


UPGRADES = {1: _from_v1, 2: _from_v2}  # version -> the step to the next one


def read_record(path: Path) -> dict:
    """The record in ``path`` in the current schema (``read_result``, then ``upgrade``): what reports read."""
    return upgrade(read_result(path), path)


def switches_label(train_cfg: dict) -> str:
    """The non-default numeric switches of a run as one short label (``-`` when none)."""
    parts = []
    if train_cfg.get("half_frozen_backbone"):
        parts.append("half-frozen")
    if train_cfg.get("sdpa_backend", "auto") != "auto":
        parts.append(f"sdpa={train_cfg['sdpa_backend']}")
    if train_cfg.get("tf32"):
        parts.append("tf32")
    if train_cfg.get("compile"):
        parts.append("compile")
    return "+".join(parts) or "-"


def switches_of(config: dict) -> str:
    """Numeric switches and sensitivity ablations of a run as one label: runs that differ in them never share a row."""
    ablations = []
    if dig(config, "model", "visual_attention") is False:
        ablations.append("no-visual-attention")
    if (dig(config, "data", "frame_ablation") or "none") != "none":
        ablations.append(f"frames={dig(config, 'data', 'frame_ablation')}")
    label = switches_label(dig(config, "train") or {})
    return "+".join(([] if label == "-" else [label]) + ablations) or "-"


def sweep_setting(config: dict) -> dict:
    """A run's configuration minus what a sweep varies per run (strategy, seed, and the training hyperparameters
    each strategy declares for itself: ``strategy_hyperparameters``): what a gate baseline is valid for.
    ``train.device: auto`` is resolved on this machine, so a CPU baseline does not pass a run on a GPU."""
    from strategies.registry import HYPERPARAMETERS

    setting = {key: value for key, value in config.items() if key != "strategy"}
    setting["train"] = {key: value for key, value in config["train"].items()
                        if key != "seed" and key not in HYPERPARAMETERS}
    if setting["train"].get("device") == "auto":
        import torch

        setting["train"]["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def strategy_hyperparameters(config: dict) -> dict:
    """The run's values of the ``train`` keys a strategy declares for itself (strategies/registry.py)."""
    from strategies.registry import HYPERPARAMETERS

    return {key: config["train"].get(key) for key in HYPERPARAMETERS}


class OtherSettingError(BenchError, ValueError):
    """A run's result file holds a finished run of another setting: running would replace it (one line, exit 2)."""


def first_difference(expected, actual, path: str = "", *, labels: tuple[str, str] = ("baseline", "this sweep")
                     ) -> str | None:
    """The first dotted key (sorted) at which two configs differ, in words: ``train.epochs: baseline 1, this sweep
    3``; None when they are equal."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            found = first_difference(expected.get(key), actual.get(key), f"{path}.{key}" if path else key,
                                     labels=labels)
            if found:
                return found
        return None
    return None if expected == actual else f"{path}: {labels[0]} {expected!r}, {labels[1]} {actual!r}"


def identity_difference(record: dict, cfg: RunConfig, weights_sha256: str | None = None) -> str | None:
    """Why ``record`` is not a result of the run ``cfg`` describes, in words; None when it is. A run's identity is
    everything that changes its result: the whole resolved config (``config_digest``: data, model, strategy with
    every parameter, training, precision, seed) and the content of the weights it starts from (``weights.sha256``;
    compared when both sides know it). Which code made a record is checked apart (``source_sha256``: the gate
    re-runs records of other code; a plain resume keeps them)."""
    if record["run"].get("config_digest") != cfg.digest():
        return first_difference(record["run"].get("config") or {}, cfg.to_dict(), labels=("there", "here")) or \
            f"config digest {record['run'].get('config_digest')} there, {cfg.digest()} here"
    recorded = dig(record, "weights", "sha256")
    if recorded and weights_sha256 and recorded != weights_sha256:
        return f"weights sha256 {recorded[:12]}.. there, {weights_sha256[:12]}.. here (same path, other content)"
    return None


def check_no_other_setting(path: Path, cfg: RunConfig, *, weights_sha256: str | None = None,
                           replace: bool = False) -> dict | None:
    """A finished result at a run's path that is another setting's is never replaced silently: refused with one
    line naming both settings and the flag (``OtherSettingError``), or with ``replace`` moved into ``set-aside/``
    (``<name>.other-setting.json``, byte for byte) before the run. Failed and preempted records are no result to
    keep (``settle`` keeps a good result from a failure). Returns the resumable record left at ``path`` (None: none),
    so that a resume need not read it again (``resume_decision(..., record=...)``)."""
    record = reusable_record(path)
    if record is None or record["run"]["status"] != OK:
        return record
    difference = identity_difference(record, cfg, weights_sha256)
    if difference is None:
        return record
    if not replace:
        raise OtherSettingError(f"{path}: holds a finished run of another setting ({difference}); choose another "
                                "--out, or pass --replace-other-settings to set it aside and run this one")
    set_aside(path, OTHER_SETTING, f"{path}: a finished run of another setting ({difference})")
    return None


def record_source(record: dict) -> str | None:
    """The digest of the source files that made ``record`` (None: a record older than version 3, or made without
    one)."""
    return dig(record, "code", "source_sha256")


def _set_aside_other_code(path: Path, record: dict, current: str) -> None:
    made_by = record_source(record)
    shown = f"{made_by[:12]}.." if made_by else "none recorded"
    target = set_aside(path, OTHER_CODE, "", announce=False)
    print(f"gate: {record['run']['id']}: made by other code (source sha256 {shown} vs {current[:12]}..); re-running "
          f"(the earlier record is kept as {target})", flush=True)


def skip_reason(path: Path, cfg: RunConfig, *, retry_failed: bool = False) -> str | None:
    return resume_decision(path, cfg, retry_failed=retry_failed)[0]


def is_finished(path: Path, cfg: RunConfig) -> bool:
    return skip_reason(path, cfg, retry_failed=True) is not None


def reusable_record(path: Path) -> dict | None:
    """The record at ``path`` if a resume may keep it (a version in ``RESUMABLE_VERSIONS``); None when there is none,
    after moving anything else found there into ``set-aside/`` (one line on stderr)."""
    if not os.path.lexists(path):
        return None
    try:
        record = read_result(path)
    except ResultFileError as error:
        set_aside(path, error.kind, str(error))
        return None
    if record["schema_version"] not in RESUMABLE_VERSIONS:
        set_aside(path, f"schema-v{record['schema_version']}",
                  f"{path}: schema_version {record['schema_version']}, older than this harness writes "
                  f"({SCHEMA_VERSION}) and not reusable (its config digest differs)")
        return None
    return record


def own_record(path: Path) -> dict | None:
    """The record at ``path`` if it is one this harness wrote in its current schema, which it may therefore replace;
    None when there is none, after moving anything else found there (an older version included) into
    ``set-aside/`` (one line on stderr)."""
    record = reusable_record(path)
    if record is not None and record["schema_version"] != SCHEMA_VERSION:
        set_aside(path, f"schema-v{record['schema_version']}",
                  f"{path}: schema_version {record['schema_version']}, older than this harness writes "
                  f"({SCHEMA_VERSION})")
        return None
    return record


def set_aside(path: Path, why: str, message: str, *, announce: bool = True) -> Path:
    """Move ``path`` unchanged to ``set-aside/<name>.<why>.json`` beside it (never over another file) and say so
    (``announce``; a caller that says it in its own words passes False and names the returned path)."""
    path = Path(path)
    folder = path.parent / SET_ASIDE
    folder.mkdir(exist_ok=True)
    stem = path.name[:-len(".json")] if path.name.endswith(".json") else path.name
    target, number = folder / f"{stem}.{why}.json", 1
    while os.path.lexists(target):
        number += 1
        target = folder / f"{stem}.{why}.{number}.json"
    os.rename(path, target)
    if announce:
        print(f"warning: {message}; kept unchanged as {target}, the run's new result takes its place",
              file=sys.stderr, flush=True)
    return target


def settle(record: dict, final: Path) -> dict:
    """Write ``record`` as the run's result without ever overwriting a good result with a failure: a failure beside
    a good result goes to ``<run_id>.failed.json``. The one writer of result files for every launcher; a file in
    the way that is not its own record (``own_record``) is set aside, never overwritten or deleted."""
    ok = record["run"]["status"] == OK
    earlier, failed = own_record(final), final.with_suffix(FAILED_SUFFIX)
    if record["run"]["status"] == PREEMPTED:
        count_preemption(record, earlier)
    keep_old = not ok and earlier is not None and earlier["run"]["status"] == OK
    if ok or keep_old:
        own_record(failed)
    write_json_atomic(failed if keep_old else final, record)
    if ok:
        failed.unlink(missing_ok=True)
    return record


def count_preemption(record: dict, earlier: dict | None) -> None:
    """A preempted run is run again by every resume and requeue; one preempted ``MAX_PREEMPTIONS`` times in a row
    (a run longer than its job's time limit, say) is recorded failed instead, saying so, so that no resume runs it
    for ever (``--retry-failed`` runs it again). ``run.preemptions`` counts them."""
    before = dig(earlier, "run", "preemptions") if dig(earlier, "run", "status") == PREEMPTED else 0
    record["run"]["preemptions"] = (before or 0) + 1
    if record["run"]["preemptions"] >= MAX_PREEMPTIONS:
        record["run"]["status"] = FAILED
        record["run"]["error"] = (f"preempted {record['run']['preemptions']} times in a row (last: "
                                  f"{record['run'].get('error')}); give the job more time or resources, then "
                                  "--retry-failed")


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
