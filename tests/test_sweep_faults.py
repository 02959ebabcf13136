"""A sweep survives a strategy that raises mid-run and one killed by a signal; a rerun redoes only what is missing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import run_bench
from bench.records import read_result

PLUGIN = '''
"""Strategies that fail on purpose, for the sweep's fault tests."""
import os
import signal
from dataclasses import dataclass

from strategies.registry import register


@dataclass(frozen=True)
class FaultConfig:
    pass


def _raise_at_step_two(step):
    if step == 2:
        raise RuntimeError("injected failure at step 2")


def explode(model, cfg):
    model.step_hooks.append(_raise_at_step_two)
    return model


def _kill(step):
    os.kill(os.getpid(), signal.SIGKILL)


def killed(model, cfg):
    model.step_hooks.append(_kill)
    return model


def fragile(model, cfg):
    if os.environ.get("FRAGILE_FAILS"):
        raise RuntimeError("fragile: asked to fail")
    return model


register("explode", config=FaultConfig, apply=explode, description="raises at step 2")
register("fragile", config=FaultConfig, apply=fragile, description="fails while FRAGILE_FAILS is set")
register("killed", config=FaultConfig, apply=killed, description="killed by SIGKILL at step 1")
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "fault_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PAR_BENCH_PLUGINS", "fault_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_failures_are_recorded_and_the_sweep_goes_on(plugin, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--preset", "smoke", "--strategies", "explode,frozen,killed", "--out", str(out)]
    assert run_bench.main(args) == 1  # some runs failed
    explode = read_result(out / "explode__f2_b16_s0.json")
    killed = read_result(out / "killed__f2_b16_s0.json")
    frozen = read_result(out / "frozen__f2_b16_s0.json")
    assert explode["run"]["status"] == "failed" and "injected failure at step 2" in explode["run"]["error"]
    assert killed["run"]["status"] == "failed" and "SIGKILL" in killed["run"]["error"]
    assert frozen["run"]["status"] == "ok" and frozen["metrics"]["test"]["macro_f1"] > 0
    assert not list(out.glob("*.tmp")) and not list((out / ".attempts").iterdir())
    frozen_bytes = (out / "frozen__f2_b16_s0.json").read_bytes()
    capsys.readouterr()

    assert run_bench.main(args) == 1  # a plain resume keeps the failed runs as they are
    printed = capsys.readouterr().out
    assert "frozen__f2_b16_s0: finished earlier, skipped" in printed
    assert "explode__f2_b16_s0: failed earlier, skipped (--retry-failed runs it again)" in printed
    assert "running" not in printed

    assert run_bench.main([*args, "--retry-failed"]) == 1  # asked to: the rerun re-runs only the failed runs
    printed = capsys.readouterr().out
    assert "frozen__f2_b16_s0: finished earlier, skipped" in printed
    assert "explode__f2_b16_s0: running" in printed and "killed__f2_b16_s0: running" in printed
    assert (out / "frozen__f2_b16_s0.json").read_bytes() == frozen_bytes


def test_a_failed_rerun_never_replaces_a_good_result(plugin, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    assert run_bench.main(["--preset", "smoke", "--strategies", "fragile", "--out", str(out)]) == 0
    good = (out / "fragile__f2_b16_s0.json").read_bytes()
    # the same run again (--no-resume), failing inside the worker: written beside the good one
    monkeypatch.setenv("FRAGILE_FAILS", "1")
    assert run_bench.main(["--preset", "smoke", "--strategies", "fragile", "--no-resume", "--out", str(out)]) == 1
    assert (out / "fragile__f2_b16_s0.json").read_bytes() == good
    failed = json.loads((out / "fragile__f2_b16_s0.failed.json").read_text())
    assert failed["run"]["status"] == "failed" and "asked to fail" in failed["run"]["error"]
    # another setting under the same name (another epoch count) is refused before it runs, whatever it would do
    assert run_bench.main(["--preset", "smoke", "--strategies", "fragile", "--epochs", "2", "--out", str(out)]) == 2
    assert (out / "fragile__f2_b16_s0.json").read_bytes() == good


def test_a_sweep_from_the_command_line_leaves_nothing_for_the_resource_tracker(tmp_path):
    """Workers leave by os._exit; nothing they allocated (tqdm's lock) may be reported leaked at the end."""
    command = [sys.executable, "run_bench.py", "--preset", "smoke", "--strategies", "frozen", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=Path(run_bench.__file__).parent, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "default"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaked" not in done.stderr and (tmp_path / "frozen__f2_b16_s0.json").exists()


def test_a_ctrl_c_while_the_worker_runs_stops_it():
    from bench.runner.sweep import _wait

    calls = []

    def poll():
        calls.append("poll")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _wait(lambda: calls.append("start") or "worker", lambda worker: poll(), lambda worker: calls.append("stop"))
    assert calls == ["start", "poll", "stop"]


def test_a_ctrl_c_while_the_worker_starts_waits_for_the_start_then_stops_the_worker():
    """A keypress inside ``Process.start()`` would leave a forked worker whose pid the sweep never learned; held
    back until the start returns, it stops a worker the sweep knows, and the start itself is never cut short."""
    from bench.runner.sweep import _wait

    calls, polls = [], iter([None, 0])
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def start():
        signal.raise_signal(signal.SIGINT)  # what Ctrl-C does to the sweep halfway through the start
        calls.append("started")
        return "worker"

    try:
        with pytest.raises(KeyboardInterrupt):
            _wait(start, lambda worker: calls.append("poll") or next(polls), lambda worker: calls.append("stop"))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == ["started", "stop"]


def test_a_worker_that_ends_gives_its_exit_code_and_is_not_stopped():
    from bench.runner.sweep import _wait

    codes, stopped = iter([None, None, 3]), []
    assert _wait(lambda: "worker", lambda worker: next(codes), lambda worker: stopped.append(True)) == 3
    assert stopped == []
