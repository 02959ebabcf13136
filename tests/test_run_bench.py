"""run_bench.main(argv) end to end on the smoke preset, determinism, and failures that must be clear."""
from __future__ import annotations

import json

import pytest

import run_bench
from bench.runner.experiments import expand, load_preset
from bench.training.run import run_one


def test_main_end_to_end_writes_one_json_per_run_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "runs"
    code = run_bench.main(["--preset", "smoke", "--strategies", "full,frozen", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == ["frozen__f2_b16_s0.json", "full__f2_b16_s0.json"]
    for name in files:
        record = json.loads((out / name).read_text())
        assert record["run"]["status"] == "ok"
        assert record["run"]["git_commit"] is None or len(record["run"]["git_commit"]) == 40
        test = record["metrics"]["test"]
        assert 0.0 <= test["macro_f1"] <= 1.0 and 0.0 <= test["paper_f1"] <= 1.0 and 0.0 <= test["mA"] <= 1.0
        assert "per_group" in test and "majority_test" in record["metrics"]
        planned = record["profile"]["plan"]  # the cost plan made beside the measurement
        assert planned["flops_equal"] and planned["peak_kind"] == "cpu_profiler_live_tensors"
        assert abs(planned["peak_gap_pct"]) <= 3.0
    assert "| yes " in (out / "report" / "plan_vs_measured.md").read_text()
    assert "majority macro-F1" in printed and "full" in printed and "frozen" in printed
    # a second invocation skips the finished runs
    assert run_bench.main(["--preset", "smoke", "--strategies", "full,frozen", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2


def test_same_seed_gives_same_metrics():
    spec = expand(load_preset("smoke"), strategies=["frozen"], seeds=[3], frames=[2], batch_sizes=[16])[0]
    first, second = run_one(spec.config), run_one(spec.config)
    assert first["metrics"]["test"] == second["metrics"]["test"]


def test_bad_arguments_exit_non_zero_with_one_line(capsys):
    assert run_bench.main(["--strategies", "nope", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --strategies") and "\n" not in err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as stop:
        run_bench.main(["--help"])
    assert stop.value.code == 0
    assert "--strategies" in capsys.readouterr().out


def test_run_bench_trains_on_a_prepared_mars_fixture(tmp_path):
    from data.prepare import main as prepare_main
    from tests.real_fixtures import make_mars_fixture

    raw = make_mars_fixture(tmp_path / "download")
    assert prepare_main(["mars", "--raw", str(raw), "--out", str(tmp_path / "mars")]) == 0
    out = tmp_path / "runs"
    code = run_bench.main(["--preset", "smoke", "--dataset", "mars", "--data-root", str(tmp_path / "mars"),
                           "--strategies", "frozen", "--epochs", "1", "--batch-size", "4", "--out", str(out)])
    assert code == 0
    record = json.loads(next(out.glob("frozen__*.json")).read_text())
    assert record["run"]["config"]["data"]["dataset"] == "mars"
    assert record["metrics"]["test"]["num_samples"] == 8
    code = run_bench.main(["--preset", "smoke", "--dataset", "mars", "--data-root", str(tmp_path / "mars"),
                           "--strategies", "frozen", "--batch-size", "16", "--out", str(out)])
    assert code == 2  # 12 training tracklets: a batch of 16 would run as one of 12, recorded as 16


def test_list_strategies_describes_every_strategy_and_counts_parameters_by_building(capsys):
    from bench.runner.experiments import strategy_catalog

    assert run_bench.main(["--list-strategies"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert listed == list(strategy_catalog())
    assert run_bench.main(["--list-strategies", "--backbone", "par-vit-micro"]) == 0
    printed = capsys.readouterr().out
    assert "preset 'paper' (fusion width 240, 6 frames)" in printed  # paper scale unless --preset says otherwise
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in printed.splitlines()
            if line.startswith("| ") and "strategy" not in line}
    trainable = {name: int(cells[0].replace(",", "")) for name, cells in rows.items()}
    total = {name: int(cells[1].replace(",", "")) for name, cells in rows.items()}
    assert set(trainable) == set(strategy_catalog())
    assert trainable["frozen"] < trainable["lora"] < trainable["full"] == total["full"]
    assert total["lora"] - total["frozen"] == trainable["lora"] - trainable["frozen"]  # LoRA adds what it trains
