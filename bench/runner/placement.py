"""Where a run executes: the pool slot it got (index, GPUs it sees, CPU threads) and the record's ``placement``.

A launcher hands each worker process its slot through environment variables, so the worker -- forked, a fresh
subprocess, a Slurm array task or a Ray task -- records where it ran without knowing which launcher started it.
``CUDA_VISIBLE_DEVICES`` narrows a worker to its slot's GPUs (peak memory stays per run and per device); the
intra-op thread count is set with ``torch.set_num_threads`` and the OpenMP / MKL variables.

CPU results depend on the thread count: a different number of threads sums in a different order (on this
project's smoke preset, 1 vs 2 threads moved test metrics by up to 0.0035). Runs are bit-identical only at the
same ``threads``, which the record keeps.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

LAUNCHER_ENV, SLOT_ENV, THREADS_ENV = "PAR_BENCH_LAUNCHER", "PAR_BENCH_SLOT", "PAR_BENCH_THREADS"


@dataclass(frozen=True)
class Slot:
    """One worker place of a launcher: ``gpus`` None inherits the GPUs the launcher sees; ``threads`` None keeps
    torch's default (all cores)."""

    index: int | None = 0
    gpus: tuple[str, ...] | None = None
    threads: int | None = None
    launcher: str = "serial"
    progress_bars: bool = True  # off where several workers share one terminal

    def env(self) -> dict[str, str]:
        """Environment variables that put a worker process into this slot."""
        env = {LAUNCHER_ENV: self.launcher}
        if self.index is not None:
            env[SLOT_ENV] = str(self.index)
        if not self.progress_bars:
            env["TQDM_DISABLE"] = "1"
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        if self.threads is not None:
            env.update({THREADS_ENV: str(self.threads), "OMP_NUM_THREADS": str(self.threads),
                        "MKL_NUM_THREADS": str(self.threads)})
        return env


    def placement(self, requested_device: str = "auto", world_size: int = 1) -> dict:
        """The ``run.placement`` of a run this slot started but whose worker wrote no record (killed, crashed)."""
        gpus = ",".join(self.gpus) if self.gpus is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
        return {**placement(requested_device), "launcher": self.launcher, "slot": self.index,
                "cuda_visible_devices": gpus, "threads": self.threads or placement()["threads"],
                "world_size": world_size}


def allocated_cores() -> int:
    """The cores this process may run on: its CPU affinity (what a Slurm allocation, a cgroup cpuset or ``taskset``
    leaves it), capped by ``SLURM_CPUS_PER_TASK`` where Slurm sets it, not the node's full count: slots and torchrun
    ranks share these out, so step times are measured on the cores a run really has."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS)
        cores = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(cores, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cores)


def cpu_slots(jobs: int, *, threads: int | None = None, cores: int | None = None, launcher: str = "pool"
              ) -> list[Slot]:
    """``jobs`` CPU slots, each with ``threads`` threads (default: an equal share of the allocated cores, at least
    1)."""
    cores = cores or allocated_cores()
    share = threads or max(1, cores // jobs)
    return [Slot(index=i, threads=share, launcher=launcher, progress_bars=jobs == 1) for i in range(jobs)]


def gpu_slots(gpus: list[str], *, per_slot: int = 1, threads: int | None = None, launcher: str = "pool"
              ) -> list[Slot]:
    """One slot per ``per_slot`` listed GPUs (``per_slot`` > 1: a torchrun run over several GPUs), each with
    ``threads`` threads (default: an equal share of the allocated cores, at least 1)."""
    if not gpus or len(gpus) % per_slot:
        raise ValueError(f"--gpus {','.join(gpus)}: expected a multiple of --nproc-per-node {per_slot} GPU ids")
    chunks = [tuple(gpus[i:i + per_slot]) for i in range(0, len(gpus), per_slot)]
    share = threads or max(1, allocated_cores() // len(chunks))
    return [Slot(index=i, gpus=chunk, threads=share, launcher=launcher, progress_bars=len(chunks) == 1)
            for i, chunk in enumerate(chunks)]


def apply_threads() -> int | None:
    """In a worker: honour the slot's thread count (the fork server imported torch before the slot was known)."""
    threads = os.environ.get(THREADS_ENV)
    if not threads:
        return None
    import torch

    torch.set_num_threads(int(threads))
    return int(threads)


def device_label(requested: str) -> str:
    """The device a run asking for ``requested`` gets in this process (under torchrun: its local rank's GPU)."""
    import torch

    if requested != "auto":
        return requested
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def placement(requested_device: str = "auto") -> dict:
    """The record's ``run.placement``: launcher, host, slot, device, visible GPUs, threads, rank count."""
    import torch

    slot = os.environ.get(SLOT_ENV)
    return {"launcher": os.environ.get(LAUNCHER_ENV, "direct"), "host": socket.gethostname(),
            "slot": int(slot) if slot is not None else None, "device": device_label(requested_device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": torch.get_num_threads(),
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
