"""A local pool: the pending runs of a sweep spread over CPU slots (``--jobs N``) or GPUs (``--gpus 0,1,...``).

Each slot runs one worker process at a time (the same forked worker as the serial sweep), so every run still has a
process of its own: its peak memory stays per run and per device, and an exception, an out-of-memory kill or a
signal ends only that run, which is recorded as failed while the other slots go on. A GPU slot sees only its GPUs
(``CUDA_VISIBLE_DEVICES``); a CPU slot gets an equal share of the cores (``torch.set_num_threads``), recorded in the
run's ``placement`` and ``environment.torch_threads``. Results are written by ``bench.records.settle``, as in the
serial sweep; runs are taken in sweep order, each by the first free slot.
"""
from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from bench.runner.placement import Slot
from bench.runner.sweep import Launcher, Progress, RunSpec, run_spec


def _run_in_free_slot(spec: RunSpec, *, out_dir: Path, free: queue.Queue, progress: Progress) -> dict:
    slot = free.get()
    try:
        where = f"GPU {','.join(slot.gpus)}" if slot.gpus is not None else f"{slot.threads} thread(s)"
        progress.say(spec, f"running in slot {slot.index} ({where})")
        record = run_spec(spec, out_dir, slot)
        progress.finished(spec, record)
        return record
    finally:
        free.put(slot)


def pool_launcher(slots: list[Slot]) -> Launcher:
    """A launcher running at most ``len(slots)`` runs at once, each in a worker process placed in a free slot."""

    def launch(pending: list[RunSpec], out_dir: Path, progress: Progress) -> dict[str, dict]:
        free: queue.Queue = queue.Queue()
        for slot in slots:
            free.put(slot)
        run = partial(_run_in_free_slot, out_dir=out_dir, free=free, progress=progress)
        with ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="bench-slot") as threads:
            records = list(threads.map(run, pending))
        return {spec.run_id: record for spec, record in zip(pending, records, strict=True)}

    return launch
