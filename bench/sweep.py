"""A sweep: every (strategy, seed, frames, batch size) run in its own worker process.

Finished runs (status ok, identical config digest) are skipped when a sweep is started again. A run that raises,
runs out of memory or is killed by a signal becomes a failed record and the sweep goes on. A failure never replaces
an earlier good result of the same run: it is then written beside it as ``<run_id>.failed.json``.

Workers are forked from a ``multiprocessing`` fork server that has imported the heavy third-party libraries once
(torch, torchvision, open_clip, peft: about 7 s a process on this project's CPU, 20 % of a default run). A forked
worker is still a process of its own: it starts with no tensor allocated, so its peak-memory figures are as clean
as a fresh interpreter's, and a crash or a kill ends only it. The project's own modules, strategy plugins included,
are imported in the worker, under the environment and ``sys.path`` the sweep has at that moment. Where the
platform has no fork server, each worker is a fresh ``python -m bench.worker`` subprocess.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import lifeline
from bench.config import RunConfig
from bench.results import ResultFileError, read_result, write_json_atomic
from bench.worker import run_record

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    config: RunConfig


def is_finished(path: Path, cfg: RunConfig) -> bool:
    if not path.exists():
        return False
    try:
        record = read_result(path)
    except ResultFileError as error:
        print(f"warning: {error}; the run is redone and the file replaced", flush=True)
        return False
    return record["run"]["status"] == "ok" and record["run"].get("config_digest") == cfg.digest()


def _failure_record(spec: RunSpec, returncode: int) -> dict:
    if returncode < 0:
        reason = f"killed by signal {signal.Signals(-returncode).name}"
    else:
        reason = f"worker exited with code {returncode} without writing a result"
    return run_record(spec.config, run_id=spec.run_id, status="failed", error=reason)


def _settle(spec: RunSpec, attempt: Path, final: Path, returncode: int) -> dict:
    """Move the attempt's record into place without ever overwriting a good result with a failure."""
    record = None
    if attempt.exists():
        try:
            record = read_result(attempt)
        except ResultFileError:
            record = None
    if record is None:
        record = _failure_record(spec, returncode)
    attempt.unlink(missing_ok=True)
    ok = record["run"]["status"] == "ok"
    keep_old = not ok and final.exists() and _is_ok(final)
    write_json_atomic(final.with_suffix(".failed.json") if keep_old else final, record)
    if ok:
        final.with_suffix(".failed.json").unlink(missing_ok=True)
    return record


def _is_ok(path: Path) -> bool:
    try:
        return read_result(path)["run"]["status"] == "ok"
    except ResultFileError:
        return False


FORK_SERVER = "forkserver" in multiprocessing.get_all_start_methods()
PRELOAD = ["bench.preload"]  # third-party imports only: see bench/preload.py


def _subprocess_worker(arguments: tuple[str, ...], env: dict) -> int:
    command = [sys.executable, "-m", "bench.worker", *arguments]
    # own session: Ctrl-C reaches only the sweep, which stops the worker; the kernel kills it if the sweep dies
    return subprocess.run(command, cwd=ROOT, env=env, start_new_session=True,
                          preexec_fn=lifeline.die_with_parent).returncode


def _forked_worker(arguments: tuple[str, ...], env: dict) -> int:
    """Run ``bench.worker`` in a process forked from the preloaded fork server; its exit code (negative: signal)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    process = context.Process(target=_worker_main, args=(arguments, env), name=f"bench-worker {arguments[2]}")
    process.start()
    try:
        process.join()
    except KeyboardInterrupt:
        lifeline.stop_process(process)
        raise
    return process.exitcode


def _worker_main(arguments: tuple[str, ...], env: dict) -> None:
    """Inside the forked worker: take the sweep's current environment and paths, then run like ``bench.worker``."""
    lifeline.tie_to_sweep_pid(int(env[lifeline.SWEEP_PID_ENV]))
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = extra
    _thread_only_progress_lock()
    from bench.worker import execute

    code = execute(Path(arguments[0]), Path(arguments[1]), arguments[2])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown of the preloaded libraries


def _thread_only_progress_lock() -> None:
    """tqdm's default lock includes a multiprocessing semaphore; a worker that leaves by ``os._exit`` never releases
    it, and the resource tracker warns about it at the end of the sweep. One process writes each bar: a thread lock
    is enough."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def run_spec(spec: RunSpec, out_dir: Path) -> dict:
    """Run one spec in a worker process of its own and return its settled record."""
    attempts = out_dir / ".attempts"
    attempts.mkdir(parents=True, exist_ok=True)
    config_path, attempt = attempts / f"{spec.run_id}.config.json", attempts / f"{spec.run_id}.json"
    attempt.unlink(missing_ok=True)
    config_path.write_text(json.dumps(spec.config.to_dict(), indent=2))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           lifeline.SWEEP_PID_ENV: str(os.getpid())}
    arguments = (str(config_path), str(attempt), spec.run_id)
    try:
        returncode = _forked_worker(arguments, env) if FORK_SERVER else _subprocess_worker(arguments, env)
    except KeyboardInterrupt:
        attempt.unlink(missing_ok=True)
        config_path.unlink(missing_ok=True)
        print(file=sys.stderr)  # end the stopped worker's progress bar, so the message gets a line of its own
        raise KeyboardInterrupt(f"{spec.run_id} stopped and its attempt discarded; finished runs are kept in "
                                f"{out_dir}; run the same command again to resume") from None
    config_path.unlink(missing_ok=True)
    return _settle(spec, attempt, out_dir / f"{spec.run_id}.json", returncode)


def run_sweep(specs: list[RunSpec], out_dir: Path, *, resume: bool = True) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, start = [], time.perf_counter()
    for index, spec in enumerate(specs, 1):
        final = out_dir / f"{spec.run_id}.json"
        if resume and is_finished(final, spec.config):
            print(f"[{index}/{len(specs)}] {spec.run_id}: finished earlier, skipped", flush=True)
            records.append(read_result(final))
            continue
        print(f"[{index}/{len(specs)}] {spec.run_id}: running", flush=True)
        record = run_spec(spec, out_dir)
        print(f"[{index}/{len(specs)}] {spec.run_id}: {record['run']['status']}"
              + (f" ({record['run']['error']})" if record["run"]["error"] else ""), flush=True)
        records.append(record)
    print(f"sweep: {len(specs)} run(s) in {time.perf_counter() - start:.0f} s wall time", flush=True)
    return records
