"""The CUDA memory model of the cost plan (bench/measure/cuda_memory.py): the caching allocator on hand-computed
cases, its replay over a traced step, the largest batch that fits, and the --gpu-memory flag's input errors."""
from __future__ import annotations

import pytest

import run_bench
from bench.measure import cuda_memory
from bench.measure.cuda_memory import GIB, MIB, CachingAllocator, replay
from bench.runner import planning
from tests.test_plan import smoke_spec


def test_small_requests_are_rounded_to_512_bytes_in_2_mib_segments():
    allocator = CachingAllocator()
    allocator.malloc("a", 100)
    allocator.malloc("b", 513)
    assert (allocator.allocated, allocator.reserved) == (512 + 1024, 2 * MIB)


def test_large_requests_split_a_20_mib_segment_and_big_ones_get_their_own():
    allocator = CachingAllocator()
    allocator.malloc("a", int(1.5 * MIB))  # > 1 MiB, < 10 MiB: a 20 MiB segment, split
    allocator.malloc("b", 5 * MIB)  # served from the 18.5 MiB rest
    assert allocator.reserved == 20 * MIB
    allocator.malloc("c", 30 * MIB + 1)  # >= 10 MiB: rounded up to 2 MiB
    assert allocator.reserved == 20 * MIB + 32 * MIB
    assert allocator.allocated == int(1.5 * MIB) + 5 * MIB + 30 * MIB + 512


def test_freed_neighbours_merge_and_are_reused_before_a_new_segment():
    allocator = CachingAllocator()
    for key in "abc":
        allocator.malloc(key, 4 * MIB)  # 12 MiB of one 20 MiB segment
    allocator.release("a")
    allocator.release("b")
    allocator.malloc("d", 8 * MIB)  # fits only in a + b merged
    assert allocator.reserved == 20 * MIB and allocator.peak_reserved == 20 * MIB
    allocator.malloc("e", 9 * MIB)  # 8 MiB free at the end of the segment: too small, a new one
    assert allocator.reserved == 40 * MIB


def test_a_request_takes_the_smallest_block_that_fits():
    allocator = CachingAllocator()
    allocator.malloc("big", 30 * MIB)
    allocator.malloc("small", 12 * MIB)
    allocator.release("big")
    allocator.release("small")
    allocator.malloc("x", 11 * MIB)
    segment, _, size = allocator.live["x"]
    assert segment == 1 and size == 12 * MIB  # the 12 MiB block, not a split of the 30 MiB one (rest < 1 MiB)


def test_replay_of_a_traced_step_holds_at_least_its_live_bytes():
    planner = planning.Planner()
    trace = planner.trace(smoke_spec("full").config)
    for batch in (2, 8):
        cuda = replay(trace.allocator_events(batch), workspaces=cuda_memory.GPUS["h100-80g"].workspace_bytes)
        assert cuda["cuda_peak_reserved_bytes"] >= cuda["cuda_peak_allocated_bytes"] >= trace.peak_bytes(batch)
        assert cuda["cuda_peak_reserved_bytes"] % (2 * MIB) == 0  # whole segments


def test_the_largest_batch_fits_and_grows_with_the_gpu():
    trace = planning.Planner().trace(smoke_spec("full").config)
    small = cuda_memory.Gpu("tiny", 0.6, 32, 500, 0, 0, 0)  # 100 MiB left after the context
    large = cuda_memory.Gpu("less-tiny", 1.0, 32, 500, 0, 0, 0)
    fits_small, fits_large = planning.largest_batch(trace, small), planning.largest_batch(trace, large)
    assert 0 < fits_small < fits_large
    budget = int(0.6 * GIB) - 500 * MIB
    events = trace.allocator_events(fits_small)
    assert replay(events, workspaces=small.workspace_bytes)["cuda_peak_reserved_bytes"] <= budget


def test_plan_with_gpu_memory_writes_the_predictions(tmp_path, capsys):
    code = run_bench.main(["--plan", "--preset", "smoke", "--strategies", "frozen", "--gpu-memory", "24,h100-80g",
                           "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "CUDA predictions" in out and "h100-80g" in out and "24GiB" in out
    import json

    row = json.loads((tmp_path / "plan" / "plan.json").read_text())["runs"][0]
    h100 = row["gpus"]["h100-80g"]
    assert h100["device_bytes_predicted"] == h100["cuda_peak_reserved_bytes"] + 500 * MIB
    assert h100["max_batch_fits"] > row["gpus"]["24GiB"]["max_batch_fits"] > 0
    assert h100["step_time_ms_predicted"] > 0 and "step_time_ms_predicted" not in row["gpus"]["24GiB"]
    curve = [row["peak_bytes_by_batch"][str(b)] for b in planning.CURVE_BATCHES]
    assert curve == sorted(curve) and curve[0] < curve[-1]  # the figure's curve grows with the batch
    assert row["peak_bytes_by_batch"]["16"] == row["peak_bytes_predicted"]  # the run's own batch: its peak
    assert (tmp_path / "plan" / "peak_vs_batch.png").stat().st_size > 10_000 and "figure:" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--plan", "--gpu-memory", "lots"], "'lots' is neither a capacity in GiB"),
    (["--plan", "--gpu-memory", "-3"], "'-3' is neither a capacity in GiB"),
    (["--gpu-memory", "24"], "--gpu-memory: only with --plan"),
])
def test_bad_gpu_memory_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        code = run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--out", str(tmp_path), *argv])
        raise SystemExit(code)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_gpu_measurement_is_compared_with_the_cuda_model():
    """plan_check --gpu: a run measured on a GPU meets the CUDA model's reserved and allocated peaks (the record
    here is the plan's own figures with a measured reserved peak 5 % above the prediction)."""
    spec = smoke_spec("full")
    planner = planning.Planner()
    planned, trace = planning.plan_run(spec, planner), planner.trace(spec.config)
    gpu = cuda_memory.GPUS["h100-80g"]
    cuda = replay(trace.allocator_events(planned["setting"]["batch_size"]), workspaces=gpu.workspace_bytes)
    measured = {**{k: planned[k] for k in planning.FLOP_KEYS}, "activation_saved_bytes": planned[
        "activation_saved_bytes"], "cuda_max_reserved_bytes": int(cuda["cuda_peak_reserved_bytes"] * 1.05),
        "cuda_max_allocated_bytes": cuda["cuda_peak_allocated_bytes"]}
    row = planning.compare_cuda_row(planned, trace, measured, gpu=gpu, source="gpu-run")
    assert row["flops_equal"] and row["activation_saved_equal"] and row["gpu_model"] == "h100-80g"
    assert row["peak_gap_pct"] == pytest.approx(100 * (1 / 1.05 - 1), abs=0.01) and row["allocated_gap_pct"] == 0


def test_gpu_validation_measures_both_precisions_then_checks_them_as_the_named_gpu(tmp_path):
    from bench.tools import gpu_validation

    args = gpu_validation.build_parser().parse_args(["--gpu", "h200-141g", "--out", str(tmp_path)])
    fp32, bf16, check = gpu_validation.commands(args)
    for command, precision in ((fp32, "fp32"), (bf16, "bf16")):
        assert command[command.index("--precision") + 1] == precision and "--profile-only" in command
        assert command[command.index("--device") + 1] == "cuda"
        assert command[command.index("--out") + 1] == str(tmp_path / f"paper-profile-{precision}")
    assert check[2] == "bench.tools.plan_check" and check[check.index("--gpu") + 1] == "h200-141g"


def test_the_report_lists_each_runs_plan_beside_its_measurement():
    from bench.reporting.tables import plan_rows

    def record(run_id, planned):
        return {"run": {"id": run_id, "strategy": run_id}, "profile": {"plan": planned}}

    rows = plan_rows([
        record("a", {"flops_equal": True, "peak_kind": "cpu_profiler_live_tensors", "peak_bytes_predicted": 3 * MIB,
                     "peak_bytes_measured": 2 * MIB, "peak_gap_pct": 50.0, "plan_time_s": 1.25}),
        record("b", {"error": "RuntimeError: no", "plan_time_s": 0.1}),
        {"run": {"id": "c", "strategy": "c"}, "profile": {}},  # made before plans were recorded
    ])
    assert [r["run"] for r in rows] == ["a", "b"]
    assert rows[0]["predicted peak (MiB)"] == "3.00" and rows[0]["gap (%)"] == "+50.000"
    assert rows[1]["FLOPs equal"] == "not planned" and "RuntimeError" in rows[1]["gap (%)"]
