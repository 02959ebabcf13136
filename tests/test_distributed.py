"""One run over several processes (DDP, gloo on CPU): exact evaluation, sharded data, and a 2-rank smoke run whose
test metrics match a one-process run at the same global batch within a stated tolerance."""
from __future__ import annotations

import numpy as np
import pytest

import run_bench
from bench.records import read_result
from bench.reporting import report
from bench.training.distributed import EpochSampler, _assemble

# Test metrics of a 2-rank DDP run vs one process at the same global batch (16 = 2 x 8) on the smoke preset differ
# by data order (DistributedSampler's permutation) and, on CPU, by BatchNorm's per-rank batch statistics: measured
# up to 0.010 on macro-F1, paper-F1 and mA; the tolerance leaves room for thread scheduling on other machines.
DDP_TOLERANCE = 0.03


def test_padding_of_the_distributed_sampler_is_dropped_and_every_item_counted_once():
    # 5 items over 2 ranks: the sampler pads to 6 by repeating item 0; rank 0 gets 0, 2, 4 and rank 1 gets 1, 3, 0
    probs = np.arange(5, dtype=float)[:, None] / 10  # item i predicts i / 10
    shards = [([0, 2, 4], probs[[0, 2, 4]], probs[[0, 2, 4]]), ([1, 3, 0], probs[[1, 3, 0]] + [[0], [0], [0.5]],
                                                                  probs[[1, 3, 0]])]
    gathered, labels = _assemble(shards, num_items=5, world_size=2)
    assert gathered[:, 0].tolist() == [0.0, 0.1, 0.2, 0.3, 0.4]  # the padded copy (0.5 off) was dropped
    assert labels.shape == (5, 1)


def test_a_missing_prediction_is_an_error_not_a_silent_nan():
    shards = [([0], np.zeros((1, 1)), np.zeros((1, 1))), ([1], np.zeros((1, 1)), np.zeros((1, 1)))]
    with pytest.raises(RuntimeError, match="1 of 3 items got no prediction"):
        _assemble(shards, num_items=3, world_size=2)


def test_the_epoch_sampler_reshuffles_every_pass_and_the_ranks_split_the_data():
    data = list(range(16))
    ranks = [EpochSampler(data, num_replicas=2, rank=r, shuffle=True, seed=0) for r in range(2)]
    first = [list(s) for s in ranks]
    second = [list(s) for s in ranks]
    assert sorted(first[0] + first[1]) == data and sorted(second[0] + second[1]) == data
    assert first != second  # set_epoch was called with a new pass number


def test_ddp_over_two_cpu_processes_matches_one_process_at_the_same_global_batch(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    common = ["--preset", "smoke", "--strategies", "frozen", "--batch-size", "16"]
    assert run_bench.main([*common, "--threads", "1", "--out", str(single)]) == 0
    assert run_bench.main([*common, "--nproc-per-node", "2", "--out", str(ddp)]) == 0
    one, two = read_result(single / "frozen__f2_b16_s0.json"), read_result(ddp / "frozen__f2_b16_s0.json")
    assert two["run"]["config"]["train"]["world_size"] == 2 and two["run"]["placement"]["world_size"] == 2
    assert two["metrics"]["test"]["num_samples"] == one["metrics"]["test"]["num_samples"] == 32  # no padding
    for key in ("macro_f1", "paper_f1", "mA"):
        assert abs(two["metrics"]["test"][key] - one["metrics"]["test"][key]) <= DDP_TOLERANCE, key
    prof = two["profile"]
    assert prof["world_size"] == 2 and prof["batch_per_rank"] == 8 and prof["flops_batch_size"] == 8
    assert len(prof["peak_mem_bytes_per_rank"]) == 2 and prof["peak_mem_bytes"] == max(prof["peak_mem_bytes_per_rank"])
    assert prof["step_time_ms_median"] == max(prof["step_time_ms_median_per_rank"])
    assert prof["throughput_clips_per_s"] == pytest.approx(16 / (prof["step_time_ms_median"] / 1000))
    assert prof["train_step_flops"] == sum(prof["train_step_flops_per_rank"])
    assert prof["params_trainable"] == one["profile"]["params_trainable"]
    # world size and per-rank batch are part of the setting: the two runs are never compared in one row
    frame = report.to_frame([one, two])
    assert frame["world_size"].tolist() == [1, 2] and frame["batch_per_rank"].tolist() == [16, 8]
    assert len(report.aggregate(frame)) == 2


def test_world_size_must_divide_the_global_batch(tmp_path, capsys):
    code = run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--batch-size", "15", "--nproc-per-node",
                           "2", "--out", str(tmp_path)])
    assert code == 2
    assert "train.world_size: expected a divisor of batch_size 15, got 2" in capsys.readouterr().err


def test_a_multi_rank_config_outside_torchrun_is_refused():
    from bench.runner.experiments import expand, load_preset
    from bench.training.run import run_one

    base = load_preset("smoke")
    base["train"]["world_size"] = 2
    spec = expand(base, strategies=["frozen"], seeds=[0], frames=[2], batch_sizes=[16])[0]
    with pytest.raises(ValueError, match="started by the sweep through torchrun"):
        run_one(spec.config)


def test_a_failing_rank_is_the_runs_error_not_rank_0s_stop(tmp_path):
    """torchrun stops rank 0 (SIGTERM, which a worker records as ``preempted``) when another rank fails: the run is
    recorded failed with that rank's own error, and the rank files are cleared."""
    from bench import records
    from bench.runner.experiments import expand, load_preset
    from bench.runner.sweep import RunSpec, collect
    from bench.runner.worker import rank_result_path, run_record

    spec = expand(load_preset("smoke"), strategies=["frozen"], seeds=[0], frames=[2], batch_sizes=[16])[0]
    attempt = tmp_path / f"{spec.run_id}.json"
    records.write_json_atomic(attempt, run_record(spec.config, run_id=spec.run_id, status=records.PREEMPTED,
                                                  error="preempted by SIGTERM"))
    records.write_json_atomic(rank_result_path(attempt, 1), run_record(
        spec.config, run_id=spec.run_id, status=records.FAILED, error="rank 1: RuntimeError: CUDA out of memory"))
    record = collect(RunSpec(spec.run_id, spec.config), attempt, returncode=1)
    assert record["run"]["status"] == "failed" and record["run"]["error"] == "rank 1: RuntimeError: CUDA out of memory"
    assert list(tmp_path.iterdir()) == []
    records.write_json_atomic(attempt, run_record(spec.config, run_id=spec.run_id, status=records.PREEMPTED,
                                                  error="preempted by SIGTERM"))
    assert collect(RunSpec(spec.run_id, spec.config), attempt, returncode=3)["run"]["status"] == "preempted"


def test_the_own_parameters_of_a_ddp_wrapped_model_leave_the_shared_head_out(tmp_path):
    """Under DDP the loop probes the wrapper: its shared head (fusion, projections, head) is not the strategy's."""
    import torch
    import torch.distributed as dist

    from bench.measure.predictions import own_parameters
    from bench.runner.experiments import expand, load_preset
    from bench.training.run import build_model

    spec = expand(load_preset("smoke"), strategies=["frozen"], seeds=[0], frames=[2], batch_sizes=[16])[0]
    model = build_model(spec.config)[0]
    assert own_parameters(model) == {}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        assert own_parameters(wrapped) == {}
    finally:
        dist.destroy_process_group()
