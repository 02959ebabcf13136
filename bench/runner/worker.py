"""Worker process for one run: ``python -m bench.runner.worker CONFIG.json RESULT.json``.

Running each run in its own process keeps peak-memory figures clean (allocator state and ``ru_maxrss`` are per
process) and turns a crash or an out-of-memory kill into a recorded failed run while the sweep goes on.
The result is written atomically; an exception is recorded with its message and traceback, and the exit code is 1.
SIGTERM or SIGUSR1 (what Slurm sends before it preempts or times out a job) ends the run as ``preempted``, exit code
3: a resumed sweep runs it again. Under torchrun only rank 0 writes the record.
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
from bench.measure.environment import environment, git_state
from bench.records import now_iso, write_json_atomic
from bench.runner.placement import apply_threads, placement


def run_record(cfg: RunConfig, *, run_id: str, status: str, error: str | None = None, started_at: str | None = None,
               duration_s: float | None = None) -> dict:
    """A record (``bench.records``) of a run in this process: its placement, environment and git state."""
    return records.new_record(cfg, run_id=run_id, status=status, error=error, started_at=started_at,
                              duration_s=duration_s, git=git_state(), placement=placement(cfg.train.device),
                              environment=environment())


PREEMPTED_EXIT_CODE = 3
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(BaseException):
    """Raised in the run by SIGTERM / SIGUSR1; a BaseException so that no ``except Exception`` swallows it."""


def _raise_preempted(signum, _frame) -> None:
    raise Preempted(f"preempted by {signal.Signals(signum).name}")


def _write(result_path: Path, record: dict) -> None:
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: one record per run, from rank 0
        write_json_atomic(result_path, record)


def execute(config_path: Path, result_path: Path, run_id: str) -> int:
    from bench.runner.run import run_one

    cfg = RunConfig.from_dict(load_json(config_path))
    apply_threads()
    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, _raise_preempted)
    started, start = now_iso(), time.perf_counter()
    try:
        outcome = run_one(cfg)
    except Preempted as stop:
        _write(result_path, run_record(cfg, run_id=run_id, status=records.PREEMPTED, started_at=started,
                                       error=str(stop), duration_s=time.perf_counter() - start))
        print(f"run {run_id} {stop}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except Exception as error:  # recorded, not hidden: the sweep reports it as a failed run
        record = run_record(cfg, run_id=run_id, status=records.FAILED, started_at=started,
                            error=f"{type(error).__name__}: {error}", duration_s=time.perf_counter() - start)
        record["run"]["traceback"] = traceback.format_exc()
        _write(result_path, record)
        print(f"run {run_id} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    record = run_record(cfg, run_id=run_id, status=records.OK, started_at=started,
                        duration_s=time.perf_counter() - start)
    record.update(outcome)  # the OUTCOME sections
    _write(result_path, record)
    return 0


if __name__ == "__main__":
    sys.exit(execute(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
