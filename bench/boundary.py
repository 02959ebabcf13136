"""The error boundary of every command-line entry point: bad input ends in one line and exit code 2, never a
traceback; a bug ends in one line that says where its traceback was written; Ctrl-C ends in one line and 130.

    @entry_point("bench.reporting.report")
    def main(argv=None) -> int: ...

Known errors are the project's own, ``BenchError`` (bench/errors.py: each message names the file or field, the
value and what was expected), a plain ``ValueError`` raised by the project's own code, and ``OSError`` (a folder
that is a file, read-only or full). The boundary imports nothing heavy (bench/errors.py is the standard library's
``abc`` alone). The resume hint of an interrupted sweep travels as the ``KeyboardInterrupt``'s message.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from bench.errors import BenchError

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TRACEBACK_DIR_ENV = "PAR_BENCH_TRACEBACK_DIR"  # where unexpected errors leave their traceback (default: temp dir)


def raised_by_project(error: BaseException) -> bool:
    """Whether the innermost frame of the error's traceback is the project's own code (not a library's)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    return PROJECT_ROOT in path.parents and not any(part in ("site-packages", ".venv") for part in path.parts)


def is_known(error: BaseException) -> bool:
    """A ``BenchError``, or a plain ValueError the project raised itself: messages written for the user."""
    return isinstance(error, BenchError) or (type(error) is ValueError and raised_by_project(error))


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def describe_os_error(error: OSError, *, with_path: bool = True) -> str:
    """``path: what went wrong`` for an OSError, with a hint for the usual causes."""
    where = (error.filename or "") if with_path else ""
    reason = error.strerror or str(error)
    hints = {errno.ENOSPC: "free space there or choose another folder",
             errno.EROFS: "choose a writable folder", errno.EACCES: "choose a folder you may write to",
             errno.ENOTDIR: "a path component is a file, expected a folder",
             errno.EEXIST: "a file is in the way of a folder"}
    hint = hints.get(error.errno)
    return one_line(f"{where}: {reason}" + (f" ({hint})" if hint else "") if where else reason)


def write_traceback(prog: str, error: BaseException) -> Path | None:
    """The full traceback of an unexpected error, in a file of its own; None if even that cannot be written."""
    folder = Path(os.environ.get(TRACEBACK_DIR_ENV) or tempfile.gettempdir())
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{prog.replace('.', '-')}-{stamp}-{os.getpid()}.traceback.txt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    except OSError:
        return None
    return path


_CTRL_C_SEEN = threading.Event()
_CTRL_C_DEFERRED = threading.Event()
FINALIZER_REDELIVERY_S = 0.05  # a keypress that landed in a __del__ is delivered again after this


def _remember_ctrl_c(signum, frame) -> None:
    """Python's own SIGINT behaviour (raise ``KeyboardInterrupt``) that also remembers the keypress: a library may
    swallow the exception (a bare ``except:`` around an optional import) or turn it into another (a lazy module that
    reports a failed import), and the command must still end as interrupted, not run on or report a bug. Inside
    ``ctrl_c_deferred`` it only remembers; inside a finalizer it sends the signal again a moment later."""
    _CTRL_C_SEEN.set()
    if _CTRL_C_DEFERRED.is_set():
        return
    if _in_finalizer(frame):  # raised there, Python would print it ("Exception ignored in ...") and drop it
        threading.Timer(FINALIZER_REDELIVERY_S, signal.raise_signal, (signal.SIGINT,)).start()
        return
    raise KeyboardInterrupt


def _in_finalizer(frame) -> bool:
    """Whether ``frame`` runs inside an object's ``__del__`` (the garbage collector calls them between any two
    bytecodes, library ones included)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def ctrl_c_deferred():
    """Run the block with Ctrl-C remembered but not raised, then raise a keypress it saw at the block's end: for the
    imports of native libraries, where a ``KeyboardInterrupt`` raised inside their initialisation can abort the
    interpreter (torch's C++ start-up: SIGABRT, exit -6) instead of unwinding. Only where ``watch_ctrl_c`` installed its
    handler; the block costs a keypress at most its own duration (seconds of imports)."""
    pressed_before = _CTRL_C_SEEN.is_set()
    _CTRL_C_DEFERRED.set()
    try:
        yield
    finally:
        _CTRL_C_DEFERRED.clear()
    if _CTRL_C_SEEN.is_set() and not pressed_before:  # an earlier keypress is the command's to honour
        raise KeyboardInterrupt


def watch_ctrl_c() -> Callable[[], None]:
    """Install ``_remember_ctrl_c`` where Ctrl-C is at Python's default (not where a background job ignores it, nor
    outside the main thread, where no handler can be set); returns what puts the previous handler back. A command
    that installs it starts with no keypress remembered (one process may run several, as a test suite or a notebook
    does); one inside another's boundary keeps the outer's memory."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return lambda: None
    _CTRL_C_SEEN.clear()
    signal.signal(signal.SIGINT, _remember_ctrl_c)
    return lambda: signal.signal(signal.SIGINT, previous)


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since the boundary was entered, even where a library
    swallowed it: called before a command starts its long work, so a swallowed keypress never starts a sweep."""
    if _CTRL_C_SEEN.is_set():
        raise KeyboardInterrupt


def report_error(prog: str, error: BaseException) -> int:
    """Print the one line an error deserves and return the exit code. After Ctrl-C any error is the interruption's
    (a library may have turned the ``KeyboardInterrupt`` into another exception)."""
    if isinstance(error, KeyboardInterrupt) or _CTRL_C_SEEN.is_set():
        said = isinstance(error, KeyboardInterrupt) and str(error)  # an interrupted sweep's resume hint
        message = one_line(str(error)) if said else "nothing half-written was kept"
        print(f"interrupted: {message}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if is_known(error):
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(error, OSError):
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    where = write_traceback(prog, error)
    saved = f"full traceback in {where}" if where else "the traceback could not be saved"
    print(f"internal error: {type(error).__name__}: {one_line(str(error))} ({saved}; please report it)",
          file=sys.stderr)
    return EXIT_INTERNAL


def entry_point(prog: str) -> Callable:
    """Decorate a ``main(argv) -> int``: every exception becomes one line and an exit code (see the module doc)."""
    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def guarded(*args, **kwargs):
            restore = watch_ctrl_c()
            try:
                return main(*args, **kwargs)
            except (Exception, KeyboardInterrupt) as error:  # SystemExit (argparse) passes through
                return report_error(prog, error)
            finally:
                restore()
        return guarded
    return decorate


def run_entry(main: Callable, prog: str) -> int:
    """For modules below ``bench`` (data, models), whose ``__main__`` guard borrows the boundary: run ``main()``
    inside it; a non-int result (e.g. a metadata dict) counts as success."""
    code = entry_point(prog)(main)()
    return code if isinstance(code, int) else 0


def run_script(main: Callable[[], int], prog: str) -> int:
    """A script's whole life under the boundary: a Ctrl-C (or an error) while its imports still run, before ``main``
    has a boundary of its own, ends in the same one line; a Ctrl-C once ``main`` has returned, while Python winds
    down (every result is written by then), exits 130 at once and quietly. Call it first thing in a script, after
    importing only this module (the standard library's), so no moment of start-up is left uncovered."""
    watch_ctrl_c()
    try:
        code = main()
    except (Exception, KeyboardInterrupt) as error:
        signal.signal(signal.SIGINT, _exit_interrupted)
        return report_error(prog, error)
    signal.signal(signal.SIGINT, _exit_interrupted)
    return code


def _exit_interrupted(signum, frame) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


def ensure_writable_folder(path: Path, *, flag: str = "--out", probe_bytes: int = 64 * 1024) -> Path:
    """Create ``path`` if needed and prove it takes a file of ``probe_bytes`` (written, flushed to disk, removed),
    so a folder that is a file, read-only or full fails before any work with one line naming ``flag``."""
    from bench.config import ConfigError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
        try:
            with os.fdopen(fd, "wb") as handle:
                write_probe(handle, probe_bytes)
        finally:
            Path(probe).unlink(missing_ok=True)
    except OSError as error:
        raise ConfigError(f"{flag} {path}: not writable ({describe_os_error(error, with_path=False)})") from None
    return path


def write_probe(handle, size: int) -> None:
    handle.write(b"\0" * size)
    handle.flush()
    os.fsync(handle.fileno())
