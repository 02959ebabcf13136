"""Who may write into an output folder, and how long a worker may live.

* ``FolderLock``: one sweep at a time per ``--out`` folder. ``fcntl.flock`` on ``<out>/.lock``, which holds the
  holder's pid, host, start time and command; the kernel drops the lock when the holder's process ends, however it
  ends (SIGKILL included), so a stale lock file never blocks anyone. A second sweep refuses at once with one line
  naming the holder, or waits for it (``--wait-lock``). Where the file system does not support ``flock`` (Lustre
  mounted without it, some NFS), ``<out>/.lock.held`` is created exclusively instead and removed at the end; a
  leftover of an ended process on this host is removed, one of another host is named for a person to judge.
* ``tie_to_sweep_pid``: a worker dies with its sweep. On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel
  to kill the worker when its parent ends. A forked worker's parent is the fork server, which leaves only once the
  sweep and every worker have closed its "alive" pipe (multiprocessing hands it to each child), so a watchdog thread
  polls the sweep's pid (a zombie counts as ended) and kills the worker; the fork server then goes too. The
  watchdog also covers other systems and the moment before the signal was armed. A worker is named
  ``bench-worker`` for ``ps`` and ``top``. It ignores Ctrl-C: the sweep stops it and discards its attempt, so one
  keypress gives one clean message instead of one traceback per process.
"""
from __future__ import annotations

import ctypes
import errno
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

from bench.errors import BenchError

LOCK_FILE = ".lock"
SWEEP_PID_ENV = "PAR_BENCH_SWEEP_PID"
PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15  # <linux/prctl.h>
WORKER_PROCESS_NAME = b"bench-worker"  # what ps / top show for a worker (at most 15 bytes)
WATCHDOG_PERIOD_S = 1.0


class FolderInUseError(BenchError, RuntimeError):
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
        self._held_file: Path | None = None

    def __enter__(self) -> FolderLock:
        import fcntl

        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._busy(handle)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in NO_FLOCK_ERRNOS:
                raise
            handle.close()  # a file system without flock (Lustre mounted without it, some NFS): exclusive create
            self._hold_by_exclusive_create()
            return self
        try:
            _describe_holder(handle)
        except OSError as error:  # a full disk: name the file, as every write of the harness does
            handle.close()
            raise OSError(error.errno, error.strerror or str(error), str(self.path)) from None
        self._handle = handle
        return self

    def _busy(self, handle=None, path: Path | None = None) -> None:
        """Another sweep holds the folder: refuse in one line, or (``--wait-lock``) say so and return to wait."""
        holder = holder_description(path or self.path)
        if not self.wait:
            if handle is not None:
                handle.close()
            raise FolderInUseError(f"{self.flag} {self.path.parent}: in use by {holder}; wait for it to end, "
                                   "pass --wait-lock to wait, or choose another --out") from None
        print(f"waiting for {self.flag} {self.path.parent}: in use by {holder}", file=sys.stderr, flush=True)

    def _hold_by_exclusive_create(self) -> None:
        """The lock where ``flock`` is not supported: ``<out>/.lock.held`` created with O_EXCL (atomic on every
        shared file system), naming its holder, removed on exit. A holder on this host whose process has ended is
        stale and removed (one line); one on another host can only be judged by a person: the message names it."""
        held, announced = self.path.with_name(LOCK_FILE + ".held"), False
        while True:
            try:
                fd = os.open(held, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _stale_here(held):
                    print(f"{held}: lock of an ended process on this host, removed", file=sys.stderr, flush=True)
                    held.unlink(missing_ok=True)
                    continue
                if not announced:
                    self._busy(path=held)
                    announced = True
                time.sleep(WATCHDOG_PERIOD_S)
                continue
            with os.fdopen(fd, "w") as handle:
                _describe_holder(handle)
            self._held_file = held
            return

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None
        if self._held_file is not None:
            self._held_file.unlink(missing_ok=True)
            self._held_file = None


NO_FLOCK_ERRNOS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}  # flock unsupported here


def _describe_holder(handle) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
                             "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "command": " ".join(sys.argv)}))
    handle.flush()


def _stale_here(held: Path) -> bool:
    """``held`` names a process on this host that no longer runs."""
    try:
        info = json.loads(held.read_text())
        if info["host"] != socket.gethostname():
            return False
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):  # unreadable or half written: not ours to judge
        return False
    return False


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "?"


def _prctl(option: int, value) -> bool:
    """Linux ``prctl(option, value)``; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_death_signal(sig: int) -> bool:
    return _prctl(PR_SET_PDEATHSIG, sig)


def die_with_parent() -> None:
    """``preexec_fn`` of a worker subprocess: killed by the kernel when the sweep that started it ends."""
    _parent_death_signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (ended, not yet reaped by its parent) counts as ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: the signal test above is all there is


def _watch(pid: int) -> None:
    while _alive(pid):
        time.sleep(WATCHDOG_PERIOD_S)
    os.kill(os.getpid(), signal.SIGKILL)  # nobody is left to read what this worker would write


def tie_to_sweep_pid(sweep_pid: int) -> None:
    """Called first in a worker process: ignore Ctrl-C (the sweep handles it) and die when the sweep ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _parent_death_signal(signal.SIGKILL)
    _prctl(PR_SET_NAME, ctypes.c_char_p(WORKER_PROCESS_NAME))
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
