"""Worker process for one run: ``python bench/runner/boot.py -m bench.runner.worker CONFIG.json RESULT.json RUN_ID``
(bench/runner/boot.py makes it run the checkout that file belongs to).

Running each run in its own process keeps peak-memory figures clean (allocator state and ``ru_maxrss`` are per
process) and turns a crash or an out-of-memory kill into a recorded failed run while the sweep goes on.
The result is written atomically; an exception is recorded with its message and traceback, and the exit code is 1.
SIGTERM, SIGUSR1 or SIGUSR2 (what Slurm and submitit send before a job is preempted or times out) ends the run as
``preempted``, exit code
3: a resumed sweep runs it again. Under torchrun only rank 0 writes the record. A record that cannot be written (a
full disk, no permission) is one line naming the file and exit code 4, never a traceback: the sweep, which writes in
the same folder, then records the run as failed or stops with that folder's error.

With ``run_bench.py --track`` the sweep names trackers in the environment (``bench.measure.trackers.TRACK_ENV`` and
``TRACK_DIR_ENV``, beside the config, never in it: the config's digest is the run's identity), and a written record
is then mirrored to them; a tracker's failure is one warning line and changes neither the record nor the exit code.
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
from bench.measure import trackers
from bench.measure.environment import code_state, environment, source_digest
from bench.records import now_iso, write_json_atomic
from bench.runner import lifeline
from bench.runner.placement import apply_threads, placement
from bench.training.checkpoint import checkpoint_path


def run_record(cfg: RunConfig, *, run_id: str, status: str, error: str | None = None, started_at: str | None = None,
               duration_s: float | None = None) -> dict:
    """A record (``bench.records``) of a run in this process: its placement, environment and code (git state and
    the source digest this process took first)."""
    return records.new_record(cfg, run_id=run_id, status=status, error=error, started_at=started_at,
                              duration_s=duration_s, code=code_state(), placement=placement(cfg.train.device),
                              environment=environment())


PREEMPTED_EXIT_CODE = 3
UNWRITTEN_EXIT_CODE = 4  # the record could not be written
# SIGUSR2: what submitit asks Slurm to send before a job's time limit (``--signal=USR2@90``); unhandled, it would
# kill the worker instead of ending its run as preempted.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(BaseException):
    """Raised in the run by SIGTERM / SIGUSR1 / SIGUSR2; a BaseException so that no ``except Exception`` swallows it."""


def _raise_preempted(signum, _frame) -> None:
    raise Preempted(f"preempted by {signal.Signals(signum).name}")


def rank_result_path(result_path: Path, rank: int) -> Path:
    """Where torchrun rank ``rank`` (> 0) leaves its record when it fails (``bench.runner.sweep.collect`` reads it)."""
    return result_path.with_name(f"{result_path.stem}.rank{rank}.json")


def _write(result_path: Path, record: dict, code: int) -> int:
    """Write the record (under torchrun, rank 0 only) and return the worker's exit code: ``code``, or
    ``UNWRITTEN_EXIT_CODE`` after one line naming the file when it cannot be written."""
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:  # a failing rank leaves its own error beside rank 0's (which torchrun then stops: SIGTERM)
        if record["run"]["status"] == records.FAILED:
            record["run"]["error"] = f"rank {rank}: {record['run']['error']}"
            write_json_atomic(rank_result_path(result_path, rank), record)
        return code
    try:
        write_json_atomic(result_path, record)
    except OSError as error:
        print(f"run {record['run']['id']}: result not written: {error.filename or result_path}: "
              f"{error.strerror or error}", file=sys.stderr)
        return UNWRITTEN_EXIT_CODE
    _mirror(record)
    return code


def _mirror(record: dict) -> None:
    """Mirror the written record to the trackers the sweep named, if any. A preempted run is not mirrored (it runs
    again), nor a failure beside a good result of the run, which stays the run's result (``records.settle``)."""
    try:
        names, out = trackers.from_environment()
    except ValueError as error:
        print(f"warning: run {record['run']['id']}: not mirrored: {error}", file=sys.stderr)
        return
    status = record["run"]["status"]
    if not names or status == records.PREEMPTED or (status != records.OK and _good_result(out, record)):
        return
    trackers.mirror(record, out, names)


def _good_result(out: Path, record: dict) -> bool:
    try:
        return records.read_result(out / f"{record['run']['id']}.json")["run"]["status"] == records.OK
    except (OSError, ValueError):  # none yet, or one settle will set aside
        return False


def execute(config_path: Path, result_path: Path, run_id: str) -> int:
    from bench.training.run import run_one

    cfg = RunConfig.from_dict(load_json(config_path))
    source_digest()  # taken now, before the run: the record names the code the run started with
    apply_threads()
    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, _raise_preempted)
    started, start = now_iso(), time.perf_counter()
    saved = checkpoint_path(result_path, run_id, cfg.digest(), source_digest())
    try:
        outcome = run_one(cfg, checkpoint_file=saved)
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
        saved.unlink(missing_ok=True)
        return _write(result_path, record, 1)
    duration = time.perf_counter() - start
    if cfg.profile.enabled and cfg.train.world_size == 1:  # every sweep checks the planner (its time apart)
        from bench.runner.planning import prediction_beside

        outcome["profile"]["plan"] = prediction_beside(run_id, cfg, outcome["profile"])
    record = run_record(cfg, run_id=run_id, status=records.OK, started_at=started, duration_s=duration)
    record.update(outcome)  # the OUTCOME sections
    code = _write(result_path, record, 0)
    saved.unlink(missing_ok=True)  # the run has its final record: nothing to continue from
    return code


def main(argv: list[str]) -> int:
    """A worker in a process of its own (a subprocess, a torchrun rank): like a forked worker, it ignores Ctrl-C and
    ends with the sweep that started it (``bench.runner.lifeline``)."""
    sweep_pid = os.environ.get(lifeline.SWEEP_PID_ENV)
    if sweep_pid:
        lifeline.tie_to_sweep_pid(int(sweep_pid))
    return execute(Path(argv[0]), Path(argv[1]), argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
