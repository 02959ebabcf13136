"""Where the runs of a sweep execute: the command-line flags and the launcher they choose.

``--launcher local`` (default) runs the pending runs one after the other, or over ``--jobs N`` CPU slots / one slot per
``--gpus`` id (bench/runner/pool.py); ``slurm`` makes one Slurm array task per pending run through submitit
(bench/runner/slurm.py); ``ray`` makes one Ray task per run (bench/runner/ray_tasks.py). ``--nproc-per-node K`` makes
every run one DDP run over K processes started by torchrun (bench/training/distributed.py); K is the run's
``train.world_size``, part of its config and of the report's setting. Whatever the launcher, the result JSON per run in
``--out`` is the single source of truth: resume, reports and the gate read only those.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from bench.config import ConfigError
from bench.runner.placement import Slot, allocated_cores, cpu_slots, gpu_slots
from bench.runner.sweep import Launcher, serial_launcher

LAUNCHERS = ("local", "slurm", "ray")


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _gpu_ids(text: str) -> list[str]:
    ids = [v.strip() for v in text.split(",") if v.strip()]
    if not ids or not all(v.isdigit() for v in ids):
        raise argparse.ArgumentTypeError(f"expected comma-separated GPU indices such as 0,1,2,3, got {text!r}")
    return ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where runs execute (docs/scaling-out.md)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="local",
                       help="local (default: this machine), slurm (submitit job array), ray (Ray tasks)")
    group.add_argument("--jobs", type=_positive,
                       help="local: run N runs at once on CPU, each worker with an equal share of the cores "
                            "(default on CPU: one run per allocated core, one thread each, so a run's results are "
                            "those of the documented setting whatever the machine; with a GPU: 1)")
    group.add_argument("--gpus", type=_gpu_ids,
                       help="local: one worker per listed GPU (e.g. 0,1,2,3), each seeing only its GPU")
    group.add_argument("--threads", type=_positive,
                       help="CPU threads of each run (default: all cores, or their share under --jobs); CPU results "
                            "are bit-identical only at equal thread counts")
    group.add_argument("--nproc-per-node", type=_positive,
                       help="run each run over K processes (DDP, torchrun); --batch-size stays the global batch")
    group.add_argument("--retry-failed", action="store_true",
                       help="on resume, run failed runs again (default: only missing and preempted runs run)")
    group.add_argument("--no-wait", action="store_true",
                       help="slurm: exit after submitting; `python -m bench.reporting.report OUT` builds the report "
                            "later")
    slurm = parser.add_argument_group("slurm (--launcher slurm; needs the [slurm] extra)")
    slurm.add_argument("--slurm-config", type=Path, help="JSON file of the fields below (flags win over it)")
    slurm.add_argument("--slurm-partition", help="Slurm partition")
    slurm.add_argument("--slurm-time-min", type=_positive, help="time limit of each array task, minutes")
    slurm.add_argument("--slurm-gpus-per-task", type=int, help="GPUs of each array task (default 1)")
    slurm.add_argument("--slurm-array-parallelism", type=_positive, help="array tasks running at once")
    ray = parser.add_argument_group("ray (--launcher ray; needs the [ray] extra)")
    ray.add_argument("--ray-address", help="address of a running Ray cluster (default: start one on this machine)")
    ray.add_argument("--ray-gpus-per-run", type=float,
                     help="GPUs of each Ray task (default: one per --nproc-per-node rank where the cluster has GPUs, "
                          "else 0)")
    ray.add_argument("--ray-cpus-per-run", type=_positive,
                     help="CPUs of each Ray task (default: one per --nproc-per-node rank)")
    ray.add_argument("--ray-memory-gb-per-run", type=_positive_number,
                     help="memory Ray reserves for each task, GB (default: none reserved)")


JOBS_ENV = "PAR_BENCH_JOBS"


def resolve_jobs(args: argparse.Namespace, *, cpu_runs: bool) -> None:
    """Fill in ``--jobs`` (and ``--threads``) where the user gave none. CPU runs of the local launcher run one per
    allocated core with one thread each: a CPU result is bit-identical only at an equal thread count, so fixing it
    at one makes the results those of the documented setting (``--jobs N``, one thread each) on any machine, and
    every core works. GPU runs, other launchers and an explicit ``--threads`` keep one run at a time. ``PAR_BENCH_JOBS``
    in the environment, where set, is the default instead (1: one run at a time in this process, as the test suite
    runs its sweeps)."""
    if args.jobs is not None:
        return
    preset = os.environ.get(JOBS_ENV, "")
    if preset:
        if not preset.isdigit() or int(preset) < 1:
            raise ConfigError(f"environment {JOBS_ENV}={preset!r}: expected a positive integer (the default --jobs)")
        args.jobs = int(preset)
        return
    if cpu_runs and args.launcher == "local" and not args.gpus and not args.threads:
        args.jobs, args.threads = allocated_cores(), 1
    else:
        args.jobs = 1


def config_overrides(args: argparse.Namespace) -> dict:
    """Run-config keys the launch flags decide: the world size of a DDP run. The flags are checked against each
    other first, so a combination that cannot work is named as such before any config value is."""
    _check_combination(args)
    return {"train": {"world_size": args.nproc_per_node}} if args.nproc_per_node else {}


def _check_combination(args: argparse.Namespace) -> None:
    jobs = args.jobs or 1  # unresolved (before the runs are known): what the flags alone ask for
    local_only = jobs > 1 or args.gpus
    if args.launcher != "local" and local_only:
        raise ConfigError(f"--jobs / --gpus: only with --launcher local, got --launcher {args.launcher}")
    if jobs > 1 and args.gpus:
        raise ConfigError("--jobs and --gpus: give one of them (--gpus runs one worker per listed GPU)")
    if args.no_wait and args.launcher != "slurm":
        raise ConfigError(f"--no-wait: only with --launcher slurm, got --launcher {args.launcher}")
    if args.gpus and args.device not in (None, "auto", "cuda"):
        raise ConfigError(f"--device {args.device}: with --gpus each worker sees only its slot's GPU(s); "
                          "expected auto or cuda")


def _require_engine(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--launcher {extra}: the {module} package is not installed; pip install -e '.[{extra}]'")


def local_slots(args: argparse.Namespace) -> list[Slot]:
    if args.gpus:
        return gpu_slots(args.gpus, per_slot=args.nproc_per_node or 1, threads=args.threads)
    return cpu_slots(args.jobs, threads=args.threads, launcher="pool" if args.jobs > 1 else "serial")


def make_launcher(args: argparse.Namespace) -> Launcher:
    """The launcher the flags ask for; flags that do not fit together exit with code 2 (ConfigError)."""
    _check_combination(args)
    args.jobs = args.jobs or 1
    if args.launcher in ("slurm", "ray"):
        _require_engine("submitit" if args.launcher == "slurm" else "ray", args.launcher)
    if args.launcher == "slurm":
        from bench.runner.slurm import load_slurm_config, slurm_launcher

        return slurm_launcher(load_slurm_config(args), wait=not args.no_wait, retry_failed=args.retry_failed,
                              threads=args.threads)
    if args.launcher == "ray":
        from bench.runner.ray_tasks import ray_launcher

        return ray_launcher(address=args.ray_address, gpus_per_run=args.ray_gpus_per_run,
                            cpus_per_run=args.ray_cpus_per_run, threads=args.threads, ranks=args.nproc_per_node or 1,
                            memory_gb=args.ray_memory_gb_per_run)
    if args.jobs == 1 and not args.gpus and not args.threads:
        return serial_launcher
    from bench.runner.pool import pool_launcher

    return pool_launcher(local_slots(args))
