"""Blocks that a signal must not cut in two: a report's files swapped in (bench/reporting/publish.py), a worker
started (bench/runner/sweep.py: a Ctrl-C inside ``Process.start()`` would leave a worker whose pid the sweep never
learned, and so never stops). The signals that end a command wait until the block ends, then act as they would have.

Python runs signal handlers in the main thread between bytecodes, whichever OS thread the kernel chose, so masking
the signal in one thread (``pthread_sigmask``) does not hold it; a handler that only remembers the signal does.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

HELD_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block ends, then are raised again, once each, to the handlers that
    were in place (only the main thread can install handlers; elsewhere nothing is held)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    kinds = [getattr(signal, name) for name in HELD_SIGNALS if hasattr(signal, name)]
    previous = {kind: signal.signal(kind, lambda number, frame: caught.append(number)) for kind in kinds}
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, signal.SIG_DFL if handler is None else handler)  # None: a handler set outside Python
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)
