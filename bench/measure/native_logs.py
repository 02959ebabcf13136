"""Keep the torch profiler's own chatter out of a run's output, and every other line in it.

The CPU memory measurement (``bench.measure.profile.cpu_peak_memory``) runs the torch profiler, whose C++ tracing
library (kineto) writes straight to file descriptor 2, past Python's ``sys.stderr``:

    USDT:<date> <pid>:<tid> SyncActivityProfilerHandler.cpp:39] profiler_start
    USDT:<date> <pid>:<tid> SyncActivityProfilerHandler.cpp:46] profiler_stop
    ERROR:<date> <pid>:<tid> DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35

on every run of a machine without a usable GPU (code 35: no CUDA driver). None of it is a failure of the run, but the
last line reads as one. ``KINETO_LOG_LEVEL`` cannot remove these lines selectively: at 5 the ``ERROR`` line goes but
the ``USDT`` lines stay, at 6 every kineto message goes, real errors included. So the profiled call runs with fd 2
redirected to a temporary file, and afterwards every captured line that is not one of the known lines above is
written back to the real stderr, in order. A failure of the profiler itself still reaches the run as a Python
exception (recorded in the result JSON by ``cpu_peak_memory``).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

KINETO_NOISE = (
    re.compile(r"^(USDT|STAGE):\S+ \S+ \S+ \w+\.cpp:\d+\] (profiler_start|profiler_stop|Completed Stage: .*)$"),
    re.compile(r"^ERROR:\S+ \S+ \S+ DeviceProperties\.cpp:\d+\] gpuGetDeviceCount failed with code \d+$"),
)


def is_noise(line: str, noise=KINETO_NOISE) -> bool:
    return any(pattern.match(line.rstrip("\r\n")) for pattern in noise)


@contextlib.contextmanager
def native_stderr_without(noise=KINETO_NOISE):
    """Run the body with fd 2 captured; on exit, write back every captured line that matches none of ``noise``.

    Python-level writes to ``sys.stderr`` inside the body are flushed into the capture first, so the order of lines
    is kept. Where fd 2 cannot be duplicated (no such descriptor), the body runs unfiltered.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        _flush_python_streams()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            _flush_python_streams()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True)
                    if not is_noise(line.decode("utf-8", errors="replace"), noise)]
            _write_all(2, b"".join(kept))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
