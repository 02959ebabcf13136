"""The local pool (--jobs): same results as the serial sweep at equal threads, failures and kills recorded while
the pool goes on, preemption signals recorded as `preempted` and run again on resume."""
from __future__ import annotations

import textwrap

import pytest

import run_bench
from bench import records
from bench.records import read_result
from bench.runner.launch import make_launcher
from bench.runner.placement import cpu_slots, gpu_slots

PLUGIN = '''
"""Strategies that fail or are preempted on purpose, for the pool's tests."""
import os
import signal
from dataclasses import dataclass

from strategies.registry import register


@dataclass(frozen=True)
class FaultConfig:
    pass


def _hooked(action):
    def apply(model, cfg):
        model.step_hooks.append(action)
        return model
    return apply


def _raise(step):
    if step == 2:
        raise RuntimeError("injected failure at step 2")


register("explode", config=FaultConfig, apply=_hooked(_raise), description="raises at step 2")
register("killed", config=FaultConfig, apply=_hooked(lambda step: os.kill(os.getpid(), signal.SIGKILL)),
         description="killed by SIGKILL at step 1")
register("sigterm", config=FaultConfig, apply=_hooked(lambda step: os.kill(os.getpid(), signal.SIGTERM)),
         description="sent SIGTERM at step 1, as Slurm does before preempting")
register("sigusr1", config=FaultConfig, apply=_hooked(lambda step: os.kill(os.getpid(), signal.SIGUSR1)),
         description="sent SIGUSR1 at step 1")
register("sigusr2", config=FaultConfig, apply=_hooked(lambda step: os.kill(os.getpid(), signal.SIGUSR2)),
         description="sent SIGUSR2 at step 1, as submitit has Slurm do before a job's time limit")
'''
RUNS = ("frozen__f2_b16_s0", "full__f2_b16_s0")


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "fault_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PAR_BENCH_PLUGINS", "fault_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))


def _same_results(left: dict, right: dict) -> None:
    assert left["metrics"]["test"] == right["metrics"]["test"]
    assert left["metrics"]["val"] == right["metrics"]["val"]
    assert left["metrics"]["best_epoch"] == right["metrics"]["best_epoch"]
    for key in ("params_total", "params_trainable", "params_added", "fwd_flops_per_clip", "train_step_flops",
                "peak_mem_bytes"):
        assert left["profile"][key] == right["profile"][key], key


def test_two_cpu_slots_give_exactly_the_serial_results(tmp_path):
    serial, pool = tmp_path / "serial", tmp_path / "pool"
    common = ["--preset", "smoke", "--strategies", "frozen,full", "--threads", "1"]
    assert run_bench.main([*common, "--out", str(serial)]) == 0
    assert run_bench.main([*common, "--jobs", "2", "--out", str(pool)]) == 0
    for run_id in RUNS:
        _same_results(read_result(serial / f"{run_id}.json"), read_result(pool / f"{run_id}.json"))
    placements = [read_result(pool / f"{run_id}.json")["run"]["placement"] for run_id in RUNS]
    assert sorted(p["slot"] for p in placements) == [0, 1]  # both slots worked at once
    assert all(p["launcher"] == "pool" and p["threads"] == 1 and p["device"] == "cpu" and p["host"]
               for p in placements)
    assert read_result(serial / f"{RUNS[0]}.json")["run"]["placement"]["launcher"] == "serial"


def test_a_failed_and_a_killed_worker_are_recorded_and_the_pool_goes_on(plugin, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_bench.main(["--preset", "smoke", "--strategies", "explode,killed,frozen", "--jobs", "2",
                           "--out", str(out)]) == 1
    explode, killed = read_result(out / "explode__f2_b16_s0.json"), read_result(out / "killed__f2_b16_s0.json")
    assert explode["run"]["status"] == "failed" and "injected failure at step 2" in explode["run"]["error"]
    assert killed["run"]["status"] == "failed" and "SIGKILL" in killed["run"]["error"]
    assert killed["run"]["placement"]["launcher"] == "pool"
    assert read_result(out / "frozen__f2_b16_s0.json")["run"]["status"] == "ok"
    assert not list(out.glob("*.tmp")) and not list((out / ".attempts").iterdir())


def test_preemption_signals_are_recorded_and_a_resume_runs_them_again_up_to_a_limit(plugin, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--preset", "smoke", "--strategies", "sigterm,sigusr1,sigusr2", "--out", str(out)]
    assert run_bench.main(args) == 1
    for name, signal_name in (("sigterm", "SIGTERM"), ("sigusr1", "SIGUSR1"), ("sigusr2", "SIGUSR2")):
        run = read_result(out / f"{name}__f2_b16_s0.json")["run"]
        assert run["status"] == "preempted" and run["error"] == f"preempted by {signal_name}"
        assert run["preemptions"] == 1
    capsys.readouterr()
    assert run_bench.main(args) == 1
    printed = capsys.readouterr().out
    assert all(f"{name}__f2_b16_s0: running" in printed for name in ("sigterm", "sigusr1", "sigusr2"))
    one = ["--preset", "smoke", "--strategies", "sigusr2", "--out", str(out)]
    assert run_bench.main(one) == 1  # the third preemption in a row: failed, so no resume runs it for ever
    run = read_result(out / "sigusr2__f2_b16_s0.json")["run"]
    assert run["status"] == "failed" and run["preemptions"] == records.MAX_PREEMPTIONS == 3
    assert run["error"].startswith("preempted 3 times in a row (last: preempted by SIGUSR2)")
    capsys.readouterr()
    run_bench.main(one)
    assert "failed earlier, skipped (--retry-failed runs it again)" in capsys.readouterr().out


def test_slots_share_the_cores_and_split_the_gpus():
    assert [(s.index, s.threads) for s in cpu_slots(2, cores=8)] == [(0, 4), (1, 4)]
    assert [s.threads for s in cpu_slots(4, cores=2)] == [1, 1, 1, 1]
    assert cpu_slots(2, cores=8)[0].env()["OMP_NUM_THREADS"] == "4"
    slots = gpu_slots(["0", "1", "2", "3"], per_slot=2)
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
    with pytest.raises(ValueError, match="multiple of --nproc-per-node 2"):
        gpu_slots(["0", "1", "2"], per_slot=2)


def test_slots_share_the_allocated_cores_not_the_nodes(monkeypatch):
    """Under Slurm (or taskset) a process may use fewer cores than the node has: slots and ranks share those."""
    from bench.runner import placement

    monkeypatch.setattr(placement.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(placement.os, "cpu_count", lambda: 64)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert placement.allocated_cores() == 6
    assert [s.threads for s in cpu_slots(2)] == [3, 3]
    assert [s.threads for s in gpu_slots(["0", "1"])] == [3, 3]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert placement.allocated_cores() == 4 and [s.threads for s in gpu_slots(["0", "1"])] == [2, 2]


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "2", "--gpus", "0"], "--jobs and --gpus"),
    (["--launcher", "ray", "--jobs", "2"], "only with --launcher local"),
    (["--no-wait"], "--no-wait: only with --launcher slurm"),
    (["--gpus", "0,1", "--device", "cuda:1"], "--device cuda:1: with --gpus each worker sees only its slot's GPU"),
])
def test_launch_flags_that_do_not_fit_together_exit_2(argv, message, tmp_path, capsys):
    assert run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_bad_gpu_list_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as stop:
        run_bench.main(["--gpus", "a,b"])
    assert stop.value.code == 2 and "--gpus" in capsys.readouterr().err


def test_make_launcher_without_flags_is_the_serial_sweep():
    from bench.cli import build_parser
    from bench.runner.sweep import serial_launcher

    assert make_launcher(build_parser().parse_args([])) is serial_launcher


@pytest.mark.parametrize(("argv", "cpu_runs", "expected"), [
    ([], True, (4, 1)),                                # CPU: one single-thread run per allocated core
    ([], False, (1, None)),                            # a GPU run: one at a time
    (["--threads", "2"], True, (1, 2)),                # threads asked for: one run with them
    (["--jobs", "3"], True, (3, None)),                # asked for: kept
    (["--gpus", "0,1"], True, (1, None)),
    (["--launcher", "slurm"], True, (1, None)),
])
def test_jobs_default_to_one_single_thread_run_per_core_on_cpu(argv, cpu_runs, expected, monkeypatch):
    from bench.cli import build_parser
    from bench.runner import launch

    monkeypatch.delenv(launch.JOBS_ENV, raising=False)
    monkeypatch.setattr(launch, "allocated_cores", lambda: 4)
    args = build_parser().parse_args(argv)
    launch.resolve_jobs(args, cpu_runs=cpu_runs)
    assert (args.jobs, args.threads) == expected


def test_the_environment_sets_the_default_jobs_and_a_bad_value_is_named(monkeypatch):
    from bench.cli import build_parser
    from bench.config import ConfigError
    from bench.runner import launch

    monkeypatch.setenv(launch.JOBS_ENV, "1")
    args = build_parser().parse_args([])
    launch.resolve_jobs(args, cpu_runs=True)
    assert (args.jobs, args.threads) == (1, None)
    monkeypatch.setenv(launch.JOBS_ENV, "many")
    with pytest.raises(ConfigError, match="PAR_BENCH_JOBS='many'"):
        launch.resolve_jobs(build_parser().parse_args([]), cpu_runs=True)


def test_a_launcher_whose_engine_is_missing_exits_2_with_the_install_command(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else real(name, *a))
    code = run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--launcher", "slurm", "--out",
                           str(tmp_path)])
    assert code == 2
    assert "pip install -e '.[slurm]'" in capsys.readouterr().err
