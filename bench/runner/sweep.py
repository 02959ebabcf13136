"""A sweep: every (strategy, seed, frames, batch size) run in its own worker process.

Finished runs (status ok, identical config digest) are skipped when a sweep is started again, and so are failed
ones unless ``retry_failed``; preempted ones run again. A run that raises, runs out of memory or is killed by a
signal becomes a failed record and the sweep goes on. A failure never replaces an earlier good result of the same
run: it is then written beside it as ``<run_id>.failed.json`` (``bench.records.settle``, the one writer of result
files; ``skip_reason`` decides what a resume skips).

Where the pending runs execute is a launcher's only decision (``Launcher``): one after the other here
(``serial_launcher``), over CPU or GPU slots (bench/runner/pool.py), as Slurm array tasks (bench/runner/slurm.py) or Ray
tasks (bench/runner/ray_tasks.py). A run with ``train.world_size`` > 1 is started through torchrun
(bench/training/distributed.py).

Workers are forked from a ``multiprocessing`` fork server that has imported the heavy third-party libraries once
(torch, torchvision, open_clip, peft: about 7 s a process on this project's CPU, 20 % of a default run). A forked
worker is still a process of its own: it starts with no tensor allocated, so its peak-memory figures are as clean
as a fresh interpreter's, and a crash or a kill ends only it. The project's own modules, strategy plugins included,
are imported in the worker, under the environment the sweep has at that moment, and always from this checkout:
every worker starts through bench/runner/boot.py of the checkout the sweep runs from (never the working directory,
``PYTHONPATH`` or an installed copy of the project), and the fork server preloads third-party libraries only. Where
the platform has no fork server, each worker is a fresh ``python bench/runner/boot.py -m bench.runner.worker``
subprocess. Workers keep the caller's working directory but need none: every path they get is absolute.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.config import RunConfig
from bench.records import (
    FAILED,
    OK,
    ResultFileError,
    check_no_other_setting,
    read_result,
    resume_decision,
    settle,
    write_json_atomic,
)
from bench.runner import boot, lifeline
from bench.runner.placement import THREADS_ENV, Slot, allocated_cores
from bench.runner.worker import UNWRITTEN_EXIT_CODE, run_record
from bench.signals import signals_held

ROOT = Path(__file__).resolve().parents[2]  # the project folder, above bench/runner/
SERIAL = Slot()  # the serial sweep's place: this machine's GPUs and all its cores


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    config: RunConfig


def failure_record(spec: RunSpec, reason: str, *, status: str = FAILED) -> dict:
    return run_record(spec.config, run_id=spec.run_id, status=status, error=reason)


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}"
    if returncode == UNWRITTEN_EXIT_CODE:
        return "the worker could not write its result (its line above says why: a full disk or no permission)"
    return f"worker exited with code {returncode} without writing a result"


def collect(spec: RunSpec, attempt: Path, returncode: int, slot: Slot = SERIAL) -> dict:
    """The record a finished worker left in ``attempt`` or, if it left none (killed, crashed), a failed record
    placed where the worker ran."""
    record = _read_attempt(attempt)
    failed_rank = _failed_rank(attempt)
    if failed_rank is not None and (record is None or record["run"]["status"] != OK):
        record = failed_rank  # torchrun stopped rank 0 (SIGTERM: "preempted") because another rank failed
    if record is None:
        record = failure_record(spec, exit_reason(returncode))
        record["run"]["placement"] = slot.placement(spec.config.train.device, spec.config.train.world_size)
    return record


def _read_attempt(path: Path) -> dict | None:
    record = None
    if path.exists():
        try:
            record = read_result(path)
        except ResultFileError:
            record = None
    path.unlink(missing_ok=True)
    return record


def _failed_rank(attempt: Path) -> dict | None:
    """The record of the first torchrun rank > 0 that failed (``bench.runner.worker.rank_result_path``), if any; the
    rank files are removed."""
    found = [_read_attempt(path) for path in sorted(attempt.parent.glob(f"{attempt.stem}.rank*.json"))]
    return next((record for record in found if record is not None), None)


FORK_SERVER = "forkserver" in multiprocessing.get_all_start_methods()
PRELOAD = ["open_clip", "peft"]  # third-party only (they import torch, torchvision): see bench/runner/boot.py
WORKER = ("-m", "bench.runner.worker")


STOPPING = threading.Event()  # set by a launcher whose slot threads must stop their workers (bench/runner/pool.py)
POLL_S = 0.2
Worker = TypeVar("Worker")  # a started worker process: subprocess.Popen or multiprocessing.Process


def _wait(start: Callable[[], Worker], poll: Callable[[Worker], int | None], stop: Callable[[Worker], object]) -> int:
    """Start a worker (``start`` returns it) and return its exit code once it has ended. Ctrl-C
    (``KeyboardInterrupt`` in this thread, or ``STOPPING`` set for a slot thread, which Ctrl-C never reaches) stops the
    worker first and is raised here. The start itself holds Ctrl-C back (``bench.signals``): one landing inside it
    would leave a worker started that nobody knows of -- ``multiprocessing`` learns the pid last -- and so nobody
    stops."""
    worker = None  # none yet, if the start itself failed
    try:
        with signals_held():  # a signal held back is raised as the block ends: inside the try, once started
            worker = start()
        while (code := poll(worker)) is None:
            if STOPPING.is_set():
                raise KeyboardInterrupt
        return code
    except KeyboardInterrupt:
        if worker is not None:
            stop(worker)
        raise


def _started(command: list[str], env: dict) -> int:
    """A worker subprocess in a session of its own: Ctrl-C reaches only the sweep, which stops it (at once: its
    attempt is discarded); the kernel kills it if the sweep dies."""
    return _wait(lambda: subprocess.Popen(command, env=env, start_new_session=True,
                                          preexec_fn=lifeline.die_with_parent),
                 _exit_code, lambda process: (process.kill(), process.wait()))


def _exit_code(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(POLL_S)
    except subprocess.TimeoutExpired:
        return None


def _subprocess_worker(arguments: tuple[str, ...], env: dict) -> int:
    return _started([*boot.command(root=str(ROOT)), *WORKER, *arguments], env)


def _torchrun_worker(arguments: tuple[str, ...], env: dict, world_size: int) -> int:
    """One run over ``world_size`` processes (DDP) on this node, started by torchrun; rank 0 writes the record.
    The slot's threads (default: the allocated cores, ``placement.allocated_cores``) are shared out among the ranks.
    Each rank starts through
    bench/runner/boot.py, so it runs this checkout; torchrun has a session of its own, as a subprocess worker."""
    threads = max(1, int(env.get(THREADS_ENV) or allocated_cores()) // world_size)
    env = {**env, THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads)}
    boot_file = boot.command(root=str(ROOT))[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
               boot_file, *WORKER, *arguments]
    return _started(command, env)  # the ranks die with torchrun (bench.runner.worker.main)


_STARTING = threading.Lock()


def _fork_server():
    """The fork-server context, its server running. It starts with Ctrl-C ignored: it (and the resource tracker
    started with it) imports for seconds, and a Ctrl-C then would print its traceback; the sweep stops workers
    itself. Only an ignored signal survives ``exec``, so Python is started through a shell that ignores SIGINT first
    (``trap``); workers forked from the server inherit that. The sweep's own Ctrl-C handling is never touched."""
    from multiprocessing import forkserver, spawn

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    with _STARTING:
        previous = spawn.get_executable()
        spawn.set_executable(_python_ignoring_ctrl_c(previous))
        try:
            forkserver.ensure_running()
        finally:
            spawn.set_executable(previous)
    return context


@functools.cache
def _python_ignoring_ctrl_c(python: str | bytes) -> str:
    """A script that runs ``python`` with SIGINT ignored from its first instruction; removed when the sweep ends."""
    folder = tempfile.TemporaryDirectory(prefix="vpar-bench-")
    _KEPT.append(folder)
    script = Path(folder.name) / "python-ignoring-ctrl-c"
    script.write_text(f"#!/bin/sh\ntrap '' INT\nexec {shlex.quote(os.fsdecode(python))} \"$@\"\n")
    script.chmod(0o700)
    return str(script)


_KEPT: list = []  # the script's folder lives as long as the sweep's process


def _forked_worker(arguments: tuple[str, ...], env: dict) -> int:
    """Run ``bench.runner.worker`` in a process forked from the preloaded fork server; its exit code (negative:
    signal). The target is a standard-library call that runs bench/runner/boot.py of this checkout by path, so the
    worker looks nothing of the project up before this checkout is first on its ``sys.path``."""
    import runpy

    call = {"CALL": (str(ROOT), "bench.runner.sweep:worker_main", arguments, env)}
    process = _fork_server().Process(target=runpy.run_path, name=f"bench-worker {arguments[2]}",
                                     args=(boot.command(root=str(ROOT))[1],),
                                     kwargs={"init_globals": call, "run_name": boot.CALL_RUN_NAME})
    return _wait(functools.partial(_start_process, process), _joined, lifeline.stop_process)


def _start_process(process):
    process.start()
    return process


def _joined(process) -> int | None:
    process.join(POLL_S)
    return process.exitcode


def worker_main(arguments: tuple[str, ...], env: dict) -> None:
    """Inside the forked worker, this checkout in place (``boot.enter``): take the sweep's current environment and
    plugin paths, then run like ``bench.runner.worker``."""
    lifeline.tie_to_sweep_pid(int(env[lifeline.SWEEP_PID_ENV]))
    os.environ.clear()
    os.environ.update(env)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = extra  # after the checkout, which stays first
    _thread_only_progress_lock()
    from bench.runner.worker import execute

    code = execute(Path(arguments[0]), Path(arguments[1]), arguments[2])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown of the preloaded libraries


def _thread_only_progress_lock() -> None:
    """tqdm's default lock includes a multiprocessing semaphore; a worker that leaves by ``os._exit`` never releases
    it, and the resource tracker warns about it at the end of the sweep. One process writes each bar: a thread lock
    is enough."""
    import threading
    from functools import partialmethod

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    if os.environ.get("TQDM_DISABLE"):  # tqdm read its TQDM_* variables when the fork server imported it
        tqdm.__init__ = partialmethod(tqdm.__init__, disable=True)


def run_spec(spec: RunSpec, out_dir: Path, slot: Slot = SERIAL) -> dict:
    """Run one spec in a worker process of its own (in ``slot``) and return its settled record."""
    return settle(attempt_spec(spec, out_dir, slot), out_dir / f"{spec.run_id}.json")


def attempt_spec(spec: RunSpec, out_dir: Path, slot: Slot = SERIAL) -> dict:
    """Run one spec in a worker process of its own and return its record, written nowhere but ``.attempts/``."""
    attempts = out_dir / ".attempts"
    attempts.mkdir(parents=True, exist_ok=True)
    config_path, attempt = attempts / f"{spec.run_id}.config.json", attempts / f"{spec.run_id}.json"
    attempt.unlink(missing_ok=True)
    write_json_atomic(config_path, spec.config.to_dict())  # an OSError names the file
    env = {**os.environ, **slot.env(), "PYTHONPATH": boot.python_path(os.environ, root=str(ROOT)),
           lifeline.SWEEP_PID_ENV: str(os.getpid())}
    arguments = (str(config_path), str(attempt), spec.run_id)
    try:
        if spec.config.train.world_size > 1:
            returncode = _torchrun_worker(arguments, env, spec.config.train.world_size)
        elif FORK_SERVER:
            returncode = _forked_worker(arguments, env)
        else:
            returncode = _subprocess_worker(arguments, env)
    except KeyboardInterrupt:
        attempt.unlink(missing_ok=True)
        config_path.unlink(missing_ok=True)
        print(file=sys.stderr)  # end the stopped worker's progress bar, so the message gets a line of its own
        raise KeyboardInterrupt(f"{spec.run_id} stopped and its attempt discarded; finished runs are kept in "
                                f"{out_dir}; run the same command again to resume") from None
    config_path.unlink(missing_ok=True)
    return collect(spec, attempt, returncode, slot)


class Progress:
    """One line per started and finished run, numbered in sweep order; safe to call from several threads."""

    def __init__(self, specs: list[RunSpec]):
        self.number = {spec.run_id: index for index, spec in enumerate(specs, 1)}
        self.total, self.lock = len(specs), threading.Lock()

    def say(self, spec: RunSpec, text: str) -> None:
        with self.lock:
            print(f"[{self.number[spec.run_id]}/{self.total}] {spec.run_id}: {text}", flush=True)

    def finished(self, spec: RunSpec, record: dict) -> None:
        run = record["run"]
        self.say(spec, run["status"] + (f" ({run['error']})" if run["error"] else ""))


# A launcher runs the pending specs and returns their settled records by run id, or None when it only submitted
# them (the records arrive in the output folder later).
Launcher = Callable[[list[RunSpec], Path, Progress], "dict[str, dict] | None"]


def serial_launcher(pending: list[RunSpec], out_dir: Path, progress: Progress) -> dict[str, dict]:
    records = {}
    for spec in pending:
        progress.say(spec, "running")
        records[spec.run_id] = run_spec(spec, out_dir)
        progress.finished(spec, records[spec.run_id])
    return records


def plan(specs: list[RunSpec], out_dir: Path, progress: Progress, *, resume: bool, retry_failed: bool,
         source_sha256: str | None = None, replace_other_settings: bool = False
         ) -> tuple[list[RunSpec], dict[str, dict]]:
    """Split the sweep into the runs to execute and the earlier results a resume keeps (each file read once; one
    that is not a resumable record is set aside, never replaced: ``bench.records.reusable_record``). With
    ``source_sha256`` (the gate's), only records made by that code are kept. First, before anything runs: a finished
    result of another setting in a run's place refuses the whole sweep in one line, or with
    ``replace_other_settings`` is set aside (``bench.records.check_no_other_setting``)."""
    from models.backbone import weights_file_sha256

    weights = {spec.run_id: weights_file_sha256(spec.config.model.pretrained) for spec in specs}  # cached per file
    found = {spec.run_id: check_no_other_setting(out_dir / f"{spec.run_id}.json", spec.config,
                                                 weights_sha256=weights[spec.run_id], replace=replace_other_settings)
             for spec in specs}  # every file read once, before anything runs or is set aside for other code
    pending, kept = [], {}
    for spec in specs:
        reason, record = resume_decision(out_dir / f"{spec.run_id}.json", spec.config, retry_failed=retry_failed,
                                         source_sha256=source_sha256, weights_sha256=weights[spec.run_id],
                                         record=found[spec.run_id]) if resume else (None, None)
        if reason is None:
            pending.append(spec)
        else:
            progress.say(spec, reason)
            kept[spec.run_id] = record
    return pending, kept


def run_sweep(specs: list[RunSpec], out_dir: Path, *, resume: bool = True, retry_failed: bool = False,
              launcher: Launcher = serial_launcher, source_sha256: str | None = None,
              replace_other_settings: bool = False) -> list[dict] | None:
    """Run every spec not finished earlier with ``launcher``; the records in sweep order (None: only submitted).
    ``source_sha256``: a finished record counts only if made by these source files (the gate: fresh results only)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, progress = time.perf_counter(), Progress(specs)
    pending, records = plan(specs, out_dir, progress, resume=resume, retry_failed=retry_failed,
                            source_sha256=source_sha256, replace_other_settings=replace_other_settings)
    executed = launcher(pending, out_dir, progress) if pending else {}
    if executed is None:
        print(f"sweep: {len(pending)} run(s) submitted; results arrive in {out_dir}/", flush=True)
        return None
    records.update(executed)
    print(f"sweep: {len(specs)} run(s) in {time.perf_counter() - start:.0f} s wall time", flush=True)
    return [records[spec.run_id] for spec in specs]
