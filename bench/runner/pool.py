"""A local pool: the pending runs of a sweep spread over CPU slots (``--jobs N``) or GPUs (``--gpus 0,1,...``).

Each slot runs one worker process at a time (the same forked worker as the serial sweep), so every run still has a
process of its own: its peak memory stays per run and per device, and an exception, an out-of-memory kill or a
signal ends only that run, which is recorded as failed while the other slots go on. Ctrl-C stops every slot's worker,
discards their attempts and keeps every finished result, as in the serial sweep. A GPU slot sees only its GPUs
(``CUDA_VISIBLE_DEVICES``); a CPU slot gets an equal share of the cores (``torch.set_num_threads``), recorded in the
run's ``placement`` and ``environment.torch_threads``. Results are written by ``bench.records.settle``, as in the
serial sweep; runs are taken in sweep order, each by the first free slot.
"""
from __future__ import annotations

import queue
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path

from bench.runner.placement import Slot
from bench.runner.sweep import STOPPING, Launcher, Progress, RunSpec, run_spec


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


def _stop(threads: ThreadPoolExecutor) -> None:
    """Ctrl-C reaches only the main thread, and an error there ends the sweep: the slot threads stop their workers
    (``sweep.STOPPING``), runs not started are dropped, and the sweep waits for the slots to be free."""
    STOPPING.set()
    try:
        threads.shutdown(wait=True, cancel_futures=True)
    finally:
        STOPPING.clear()


def pool_launcher(slots: list[Slot]) -> Launcher:
    """A launcher running at most ``len(slots)`` runs at once, each in a worker process placed in a free slot."""

    def launch(pending: list[RunSpec], out_dir: Path, progress: Progress) -> dict[str, dict]:
        free: queue.Queue = queue.Queue()
        for slot in slots:
            free.put(slot)
        run = partial(_run_in_free_slot, out_dir=out_dir, free=free, progress=progress)
        threads = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="bench-slot")
        futures = [threads.submit(run, spec) for spec in pending]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            error = next((f.exception() for f in futures if f.done() and f.exception() is not None), None)
            if error is not None:  # an error that ends the sweep (a full disk), not a failed run
                raise error
            records = [future.result() for future in futures]
        except KeyboardInterrupt:
            _stop(threads)
            raise KeyboardInterrupt(f"the running runs were stopped and their attempts discarded; finished runs are "
                                    f"kept in {out_dir}; run the same command again to resume") from None
        except BaseException:
            _stop(threads)
            raise
        threads.shutdown()
        return {spec.run_id: record for spec, record in zip(pending, records, strict=True)}

    return launch
