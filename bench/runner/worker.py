"""Worker process for one run: ``python bench/runner/boot.py -m bench.runner.worker CONFIG.json RESULT.json RUN_ID``
(bench/runner/boot.py makes it run the checkout that file belongs to).

Running each run in its own process keeps peak-memory figures clean (allocator state and ``ru_maxrss`` are per
process) and turns a crash or an out-of-memory kill into a recorded failed run while the sweep goes on.
The result is written atomically; an exception is recorded with its message and traceback, and the exit code is 1.
SIGTERM or SIGUSR1 (what Slurm sends before it preempts or times out a job) ends the run as ``preempted``, exit code
3: a resumed sweep runs it again. Under torchrun only rank 0 writes the record. A record that cannot be written (a
full disk, no permission) is one line naming the file and exit code 4, never a traceback: the sweep, which writes in
the same folder, then records the run as failed or stops with that folder's error.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

from bench import records
from bench.config import RunConfig, load_json
from bench.measure.environment import code_state, environment, source_digest
from bench.records import now_iso, write_json_atomic
from bench.runner import lifeline
from bench.runner.placement import apply_threads, placement


def run_record(cfg: RunConfig, *, run_id: str, status: str, error: str | None = None, started_at: str | None = None,
               duration_s: float | None = None) -> dict:
    """A record (``bench.records``) of a run in this process: its placement, environment and code (git state and
    the source digest this process took first)."""
    return records.new_record(cfg, run_id=run_id, status=status, error=error, started_at=started_at,
                              duration_s=duration_s, code=code_state(), placement=placement(cfg.train.device),
                              environment=environment())


PREEMPTED_EXIT_CODE = 3
UNWRITTEN_EXIT_CODE = 4  # the record could not be written
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(BaseException):
    """Raised in the run by SIGTERM / SIGUSR1; a BaseException so that no ``except Exception`` swallows it."""


def _raise_preempted(signum, _frame) -> None:
    raise Preempted(f"preempted by {signal.Signals(signum).name}")


def _write(result_path: Path, record: dict, code: int) -> int:
    """Write the record (under torchrun, rank 0 only) and return the worker's exit code: ``code``, or
    ``UNWRITTEN_EXIT_CODE`` after one line naming the file when it cannot be written."""
    if int(os.environ.get("RANK", "0")) != 0:
        return code
    try:
        write_json_atomic(result_path, record)
    except OSError as error:
        print(f"run {record['run']['id']}: result not written: {error.filename or result_path}: "
              f"{error.strerror or error}", file=sys.stderr)
        return UNWRITTEN_EXIT_CODE
    return code


def execute(config_path: Path, result_path: Path, run_id: str) -> int:
    from bench.runner.run import run_one

    cfg = RunConfig.from_dict(load_json(config_path))
    source_digest()  # taken now, before the run: the record names the code the run started with
    apply_threads()
    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, _raise_preempted)
    started, start = now_iso(), time.perf_counter()
    try:
        outcome = run_one(cfg)
    except Preempted as stop:
        print(f"run {run_id} {stop}", file=sys.stderr)
        return _write(result_path, run_record(cfg, run_id=run_id, status=records.PREEMPTED, started_at=started,
                                              error=str(stop), duration_s=time.perf_counter() - start),
                      PREEMPTED_EXIT_CODE)
    except Exception as error:  # recorded, not hidden: the sweep reports it as a failed run
        record = run_record(cfg, run_id=run_id, status=records.FAILED, started_at=started,
                            error=f"{type(error).__name__}: {error}", duration_s=time.perf_counter() - start)
        record["run"]["traceback"] = traceback.format_exc()
        print(f"run {run_id} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return _write(result_path, record, 1)
    record = run_record(cfg, run_id=run_id, status=records.OK, started_at=started,
                        duration_s=time.perf_counter() - start)
    record.update(outcome)  # the OUTCOME sections
    return _write(result_path, record, 0)


def main(argv: list[str]) -> int:
    """A worker in a process of its own (a subprocess, a torchrun rank): like a forked worker, it ignores Ctrl-C and
    ends with the sweep that started it (``bench.runner.lifeline``)."""
    sweep_pid = os.environ.get(lifeline.SWEEP_PID_ENV)
    if sweep_pid:
        lifeline.tie_to_sweep_pid(int(sweep_pid))
    return execute(Path(argv[0]), Path(argv[1]), argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
