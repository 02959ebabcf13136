"""What a first run shows: no profiler chatter, real errors kept, a table in the report's units, a report index."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import run_bench
from bench.measure.native_logs import is_noise

NOISE = ("gpuGetDeviceCount", "profiler_start", "profiler_stop", "DeviceProperties.cpp",
         "SyncActivityProfilerHandler")
KINETO_LINES = (  # as the torch profiler prints them on a machine without a GPU
    "USDT:2026-12-02 05:57:48 5538:5538 SyncActivityProfilerHandler.cpp:39] profiler_start",
    "USDT:2026-12-02 05:57:48 5538:5538 SyncActivityProfilerHandler.cpp:46] profiler_stop",
    "STAGE:2026-12-02 05:57:13 5322:5322 SyncActivityProfilerHandler.cpp:47] Completed Stage: Collection",
    "ERROR:2026-12-02 05:57:48 5538:5538 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35",
)


def test_known_profiler_lines_are_noise_and_nothing_else_is():
    assert all(is_noise(line + "\n") for line in KINETO_LINES)
    assert not is_noise("ERROR:2026-12-02 05:57:48 5538:5538 CuptiActivityApi.cpp:12] CUPTI failed with code 1")
    assert not is_noise("Traceback (most recent call last):")
    assert not is_noise("profiler_stop")  # a bare word is not the kineto line


FILTERED_PROCESS = """
import os, sys
from bench.measure.native_logs import native_stderr_without
with native_stderr_without():
    os.write(2, sys.argv[1].encode() + b"\\nfirst real line\\n" + sys.argv[2].encode() + b"\\n")
    print("python-level line", file=sys.stderr)
    os.write(2, b"ERROR: a real native error\\n")
print("after the block", file=sys.stderr)
"""


def test_native_writes_are_filtered_and_other_lines_kept_in_order():
    """In a process of its own: there, as in a run, sys.stderr and the native library share file descriptor 2."""
    done = subprocess.run([sys.executable, "-c", FILTERED_PROCESS, KINETO_LINES[0], KINETO_LINES[3]],
                          cwd=Path(run_bench.__file__).parent, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["first real line", "python-level line", "ERROR: a real native error",
                                        "after the block"]


def test_a_first_run_prints_no_profiler_noise_and_reads_like_the_report(tmp_path):
    """The smoke preset end to end in a fresh process, as a newcomer runs it (CPU: the memory profiler runs)."""
    command = [sys.executable, "run_bench.py", "--preset", "smoke", "--strategies", "frozen", "--device", "cpu",
               "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=Path(run_bench.__file__).parent, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "frozen__f2_b16_s0.json").read_text())
    assert record["profile"]["peak_mem_kind"] == "cpu_profiler_live_tensors"  # the profiler did run
    output = done.stdout + done.stderr
    assert not [word for word in NOISE if word in output], output[-3000:]
    table = next(line for line in done.stdout.splitlines() if line.startswith("| strategy"))
    assert "params (M)" in table and "peak mem (MiB)" in table and "macro-F1 (%)" in table
    assert (tmp_path / "report" / "README.md").exists() and (tmp_path / "report" / "index.html").exists()
    assert "report/README.md" in done.stdout  # the run says where to start reading
