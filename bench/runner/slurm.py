"""Slurm through submitit (``--launcher slurm``; extra ``[slurm]``): one array task per pending run.

``executor.map_array`` submits one Slurm job array; each array task runs its run in a worker process of its own (as the
serial sweep does) and writes the result straight into the shared ``--out`` folder with ``bench.records.settle``, so the
output folder must be on a filesystem every node sees. Before Slurm preempts a task or its time runs out, it sends
SIGTERM (the run records ``preempted``) and submitit requeues the task through ``checkpoint``; the requeued task skips
its run when the folder already holds its result, as any resume does. The driver waits and returns the records (a task
that raised or was killed becomes a failed / preempted record), or with ``--no-wait`` exits after submitting;
``python -m bench.reporting.report OUT`` then builds the report from the JSONs.

Settings (``--slurm-config FILE.json`` and ``--slurm-*`` flags, flags win): ``partition``, ``time_min``,
``gpus_per_task``, ``cpus_per_task``, ``mem_gb``, ``array_parallelism``, ``additional`` (extra sbatch options),
``folder`` (submitit's logs and pickles; default ``OUT/.submitit``; a relative one is relative to the settings file)
and ``cluster``: ``slurm``, or submitit's ``local`` (subprocesses on this machine) / ``debug`` (in this process)
executors to try a sweep without Slurm. Every task starts Python through bench/runner/boot.py, so it runs the checkout
the sweep was started from.
"""
from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench.config import ConfigError, Validated, build, load_json, option
from bench.records import read_result, settle, skip_reason
from bench.runner import boot
from bench.runner.placement import Slot
from bench.runner.sweep import ROOT, Launcher, Progress, RunSpec, failure_record, run_spec

CLUSTERS = ("slurm", "local", "debug")


@dataclass(frozen=True)
class SlurmConfig(Validated):
    """The Slurm settings of a sweep, declared and checked like every config (``option``)."""

    SECTION: ClassVar[str] = "slurm"

    cluster: str = option("slurm", "slurm, or submitit's local (subprocesses here) / debug (this process) executors",
                          choices=CLUSTERS)
    partition: str | None = option(None, "Slurm partition; null = the cluster's default")
    time_min: int = option(240, "time limit of each array task, minutes", min=1)
    gpus_per_task: int = option(1, "GPUs of each array task", min=0)
    cpus_per_task: int | None = option(None, "CPUs of each array task; null = Slurm's default", min=1)
    mem_gb: float | None = option(None, "memory of each array task in GB; null = Slurm's default", above=0)
    array_parallelism: int = option(64, "array tasks running at once", min=1)
    additional: dict = option(help="extra sbatch options", factory=dict)
    folder: str | None = option(None, "submitit's logs and pickles; null = OUT/.submitit")


def load_slurm_config(args: argparse.Namespace) -> SlurmConfig:
    """The JSON file of ``--slurm-config`` (if any) with the ``--slurm-*`` flags on top; validated."""
    data = load_json(args.slurm_config) if args.slurm_config else {}
    if isinstance(data.get("folder"), str):  # a relative folder is relative to the file that names it
        data["folder"] = os.path.join(os.path.dirname(os.path.abspath(args.slurm_config)),
                                      os.path.expanduser(data["folder"]))
    flags = {"partition": args.slurm_partition, "time_min": args.slurm_time_min,
             "gpus_per_task": args.slurm_gpus_per_task, "array_parallelism": args.slurm_array_parallelism}
    data = {**data, **{key: value for key, value in flags.items() if value is not None}}
    if args.nproc_per_node and "gpus_per_task" not in data:
        data["gpus_per_task"] = args.nproc_per_node
    try:
        return build(SlurmConfig, data, "slurm")
    except ConfigError as error:
        raise ConfigError(f"{args.slurm_config or '--slurm-*'}: {error}") from None


def _executor(cfg: SlurmConfig, out_dir: Path):
    """submitit's executor; its tasks start Python through bench/runner/boot.py, so each runs this checkout."""
    import submitit

    folder = Path(cfg.folder) if cfg.folder else out_dir / ".submitit"
    python = shlex.join(boot.command(root=str(ROOT)))  # submitit appends: -u -m submitit.core._submit FOLDER
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cfg.cluster, slurm_python=python,
                                     local_python=python)
    executor.update_parameters(name="vpar-bench", timeout_min=cfg.time_min, gpus_per_node=cfg.gpus_per_task,
                               tasks_per_node=1, cpus_per_task=cfg.cpus_per_task, mem_gb=cfg.mem_gb,
                               slurm_partition=cfg.partition, slurm_array_parallelism=cfg.array_parallelism,
                               slurm_additional_parameters=cfg.additional or None)
    return executor


class ArrayTask:
    """What one array task runs: its spec, unless ``out_dir`` already holds the result (a requeued task)."""

    def __init__(self, out_dir: Path, *, retry_failed: bool, threads: int | None):
        self.out_dir, self.retry_failed, self.threads = Path(out_dir), retry_failed, threads

    def __call__(self, spec: RunSpec) -> dict:
        final = self.out_dir / f"{spec.run_id}.json"
        if skip_reason(final, spec.config, retry_failed=self.retry_failed) is not None:
            return read_result(final)
        task = os.environ.get("SLURM_ARRAY_TASK_ID", os.environ.get("SUBMITIT_LOCAL_GLOBAL_RANK"))
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0")) or None
        slot = Slot(index=int(task) if task and task.isdigit() else None, threads=threads, launcher="slurm")
        return run_spec(spec, self.out_dir, slot)

    def checkpoint(self, spec: RunSpec):
        """submitit calls this on preemption or timeout: requeue the same task (it resumes by skipping)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec)


def _wait(job, spec: RunSpec, out_dir: Path) -> dict:
    """The task's settled record; a task that raised is a failed run, one that was killed a preempted one."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    final = out_dir / f"{spec.run_id}.json"
    try:
        return job.result()
    except FailedJobError as error:
        lines = str(error).strip().splitlines()
        return settle(failure_record(spec, f"slurm job {job.job_id} failed: {lines[-1] if lines else error}"), final)
    except UncompletedJobError as error:
        return settle(failure_record(spec, f"slurm job {job.job_id} did not complete: {str(error).splitlines()[0]}",
                                     status="preempted"), final)


def slurm_launcher(cfg: SlurmConfig, *, wait: bool = True, retry_failed: bool = False,
                   threads: int | None = None) -> Launcher:
    def launch(pending: list[RunSpec], out_dir: Path, progress: Progress) -> dict[str, dict] | None:
        executor = _executor(cfg, out_dir)
        jobs = executor.map_array(ArrayTask(out_dir, retry_failed=retry_failed, threads=threads), pending)
        for spec, job in zip(pending, jobs, strict=True):
            progress.say(spec, f"submitted as {cfg.cluster} job {job.job_id}")
        if not wait:
            return None
        records = {}
        for spec, job in zip(pending, jobs, strict=True):
            records[spec.run_id] = _wait(job, spec, out_dir)
            progress.finished(spec, records[spec.run_id])
        return records

    return launch
