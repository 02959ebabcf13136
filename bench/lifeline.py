"""Who may write into an output folder, and how long a worker may live.

* ``FolderLock``: one sweep at a time per ``--out`` folder. ``fcntl.flock`` on ``<out>/.lock``, which holds the
  holder's pid, host, start time and command; the kernel drops the lock when the holder's process ends, however it
  ends (SIGKILL included), so a stale lock file never blocks anyone. A second sweep refuses at once with one line
  naming the holder, or waits for it (``--wait-lock``).
* ``tie_to_sweep``: a worker dies with its sweep. On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel to
  kill the worker when its parent ends; a forked worker's parent is the fork server, which itself leaves when the
  sweep's end of its socket closes. A watchdog thread that polls the sweep's pid covers the rest (other systems, and
  the moment before the signal was armed). The worker also ignores Ctrl-C: the sweep stops it and discards its
  attempt, so one keypress gives one clean message instead of one traceback per process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import getpass
import json
import os
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = ".lock"
SWEEP_PID_ENV = "PAR_BENCH_SWEEP_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_PERIOD_S = 1.0


class FolderInUseError(RuntimeError):
    """Another live process holds the output folder's lock; the message names it."""


def holder_description(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on {info['host']} (user {info['user']}, since {info['started_at']}: "
                f"{info['command']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder)"


class FolderLock:
    """``with FolderLock(out, wait=False):`` hold ``<out>/.lock`` for the duration of a sweep."""

    def __init__(self, folder: Path, *, wait: bool = False, flag: str = "--out"):
        self.path, self.wait, self.flag, self._handle = Path(folder) / LOCK_FILE, wait, flag, None

    def __enter__(self) -> FolderLock:
        import fcntl

        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_description(self.path)
            if not self.wait:
                handle.close()
                raise FolderInUseError(f"{self.flag} {self.path.parent}: in use by {holder}; wait for it to end, "
                                       "pass --wait-lock to wait, or choose another --out") from None
            print(f"waiting for {self.flag} {self.path.parent}: in use by {holder}", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
                                 "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "command": " ".join(sys.argv)}))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "?"


def _parent_death_signal(sig: int) -> bool:
    """Arm PR_SET_PDEATHSIG (Linux); False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """``preexec_fn`` of a worker subprocess: killed by the kernel when the sweep that started it ends."""
    _parent_death_signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(pid: int) -> None:
    while _alive(pid):
        time.sleep(WATCHDOG_PERIOD_S)
    os.kill(os.getpid(), signal.SIGKILL)  # nobody is left to read what this worker would write


def tie_to_sweep_pid(sweep_pid: int) -> None:
    """Called first in a worker process: ignore Ctrl-C (the sweep handles it) and die when the sweep ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _parent_death_signal(signal.SIGKILL)
    if sweep_pid and sweep_pid != os.getpid():
        threading.Thread(target=_watch, args=(sweep_pid,), name="sweep-watchdog", daemon=True).start()


def stop_process(process, *, grace_s: float = 5.0) -> None:
    """Terminate a ``multiprocessing`` worker, then kill it if it has not left after ``grace_s``."""
    if process.is_alive():
        process.terminate()
        process.join(grace_s)
    if process.is_alive():
        process.kill()
        process.join()
