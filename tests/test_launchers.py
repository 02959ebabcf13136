"""Slurm (submitit) and Ray launchers: a 2-run smoke sweep writes the same result JSONs as the serial sweep.
Skipped where the [slurm] / [ray] extra is not installed (CI installs both through the [test] extra)."""
from __future__ import annotations

import json

import pytest

import run_bench
from bench.records import read_result

RUNS = ("frozen__f2_b16_s0", "full__f2_b16_s0")
SWEEP = ["--preset", "smoke", "--strategies", "frozen,full", "--threads", "1"]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    assert run_bench.main([*SWEEP, "--out", str(out)]) == 0
    return {run_id: read_result(out / f"{run_id}.json") for run_id in RUNS}


def _same_as_serial(out, serial: dict, launcher: str) -> None:
    for run_id in RUNS:
        record = read_result(out / f"{run_id}.json")
        assert record["run"]["status"] == "ok" and record["run"]["placement"]["launcher"] == launcher
        assert record["run"]["config_digest"] == serial[run_id]["run"]["config_digest"]
        mine, theirs = record["metrics"], serial[run_id]["metrics"]
        for key in ("test", "val", "majority_test", "best_epoch"):
            assert mine[key] == theirs[key], key
        untimed = [[{k: v for k, v in epoch.items() if k != "elapsed_s"} for epoch in m["history"]]
                   for m in (mine, theirs)]
        assert untimed[0] == untimed[1]
        for key in ("params_total", "params_trainable", "fwd_flops_per_clip", "train_step_flops", "peak_mem_bytes"):
            assert record["profile"][key] == serial[run_id]["profile"][key], key


def test_submitit_local_executor_runs_a_sweep_to_the_serial_results(tmp_path, serial, capsys):
    pytest.importorskip("submitit")
    config = tmp_path / "slurm.json"
    config.write_text(json.dumps({"cluster": "local", "gpus_per_task": 0, "time_min": 20}))
    out = tmp_path / "runs"
    argv = [*SWEEP, "--launcher", "slurm", "--slurm-config", str(config), "--out", str(out)]
    assert run_bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "submitted as local job" in printed and (out / "report" / "summary.md").exists()
    _same_as_serial(out, serial, "slurm")
    assert list((out / ".submitit").glob("*/*_result.pkl"))  # the tasks ran through submitit
    # a requeued or resumed array skips what the folder already holds: nothing is submitted again
    assert run_bench.main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2


def test_submitit_no_wait_exits_after_submitting_and_the_report_is_built_later(tmp_path, capsys):
    pytest.importorskip("submitit")
    config = tmp_path / "slurm.json"
    config.write_text(json.dumps({"cluster": "debug", "gpus_per_task": 0}))
    out = tmp_path / "runs"
    argv = [*SWEEP, "--strategies", "frozen", "--launcher", "slurm", "--slurm-config", str(config), "--no-wait",
            "--out", str(out)]
    assert run_bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "submitted as debug job" in printed and "1 run(s) submitted" in printed
    assert f"python -m bench.reporting.report {out}" in printed and not (out / "report").exists()


def test_an_array_task_of_a_finished_run_only_reads_its_result(tmp_path, serial):
    pytest.importorskip("submitit")
    from bench.records import write_json_atomic
    from bench.runner.experiments import expand, load_preset
    from bench.runner.slurm import ArrayTask

    spec = expand(load_preset("smoke"), strategies=["frozen"], seeds=[0], frames=[2], batch_sizes=[16])[0]
    write_json_atomic(tmp_path / f"{spec.run_id}.json", serial[spec.run_id])
    assert ArrayTask(tmp_path, retry_failed=False, threads=1)(spec) == serial[spec.run_id]
    assert ArrayTask(tmp_path, retry_failed=False, threads=1).checkpoint(spec) is not None


def test_bad_slurm_settings_exit_2_naming_the_field(tmp_path, capsys):
    pytest.importorskip("submitit")
    config = tmp_path / "slurm.json"
    config.write_text(json.dumps({"cluster": "local", "time_minutes": 5}))
    code = run_bench.main([*SWEEP, "--launcher", "slurm", "--slurm-config", str(config), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "time_minutes" in err and str(config) in err


def test_ray_tasks_with_declared_gpus_run_a_sweep_to_the_serial_results(tmp_path, serial, capsys):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "runs"
        assert run_bench.main([*SWEEP, "--launcher", "ray", "--ray-gpus-per-run", "1", "--out", str(out)]) == 0
        assert "submitted as a Ray task (1 GPU, 1 CPU)" in capsys.readouterr().out
        _same_as_serial(out, serial, "ray")
        slots = sorted(read_result(out / f"{run_id}.json")["run"]["placement"]["slot"] for run_id in RUNS)
        assert set(slots) <= {0, 1}  # each task saw one of the declared GPUs
        # a task asking for more than the cluster has would wait forever: refused with exit code 2
        assert run_bench.main([*SWEEP, "--launcher", "ray", "--ray-gpus-per-run", "3", "--no-resume",
                               "--out", str(out)]) == 2
        assert "the Ray cluster has 2 GPU(s)" in capsys.readouterr().err
    finally:
        ray.shutdown()


def test_ray_reserves_a_gpu_and_a_cpu_per_torchrun_rank_and_refuses_too_few_gpus(monkeypatch):
    """``--launcher ray --nproc-per-node K``: each task asks for K GPUs (on a GPU cluster) and K CPUs, or refuses in
    one line a GPU count its ranks cannot run on; read against a cluster that declares 4 GPUs and 8 CPUs."""
    ray = pytest.importorskip("ray")
    from bench.config import ConfigError
    from bench.runner.ray_tasks import _resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"GPU": 4.0, "CPU": 8.0})
    assert _resources(None, None, 2) == {"num_gpus": 2.0, "num_cpus": 2}
    assert _resources(None, None) == {"num_gpus": 1.0, "num_cpus": 1}
    assert _resources(0, 3, 2) == {"num_gpus": 0, "num_cpus": 3}  # ranks on CPUs, asked for explicitly
    with pytest.raises(ConfigError, match="--ray-gpus-per-run 1: fewer than the 2 ranks"):
        _resources(1, None, 2)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "memory": 16 * 2**30})
    assert _resources(None, None, 2) == {"num_gpus": 0.0, "num_cpus": 2}
    assert _resources(None, None, 1, 4) == {"num_gpus": 0.0, "num_cpus": 1, "memory": 4 * 2**30}
    with pytest.raises(ConfigError, match="--ray-memory-gb-per-run 32: the Ray cluster has 16.0 GB"):
        _resources(None, None, 1, 32)
