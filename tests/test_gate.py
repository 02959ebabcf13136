"""The regression gate: passes on its own baseline, fails (naming strategy and metric) on each kind of regression."""
from __future__ import annotations

import json

import pytest

import run_bench

ARGS = ["--preset", "smoke", "--strategies", "frozen,full"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One smoke sweep and its baseline; later invocations on the same --out reuse the finished runs."""
    folder = tmp_path_factory.mktemp("gate")
    out, baseline = folder / "runs", folder / "baseline.json"
    assert run_bench.main([*ARGS, "--out", str(out), "--check", str(baseline), "--update-baseline"]) == 0
    return out, baseline


def _edit(baseline, tmp_path, strategy: str, metric: str, change) -> str:
    data = json.loads(baseline.read_text())
    data["strategies"][strategy][metric] = change(data["strategies"][strategy][metric])
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    return str(edited)


def _check(out, baseline, capsys) -> tuple[int, str]:
    code = run_bench.main([*ARGS, "--out", str(out), "--check", str(baseline)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_gate_passes_on_its_own_baseline(sweep, capsys):
    out, baseline = sweep
    code, text = _check(out, baseline, capsys)
    assert code == 0 and "gate: passed" in text
    recorded = json.loads(baseline.read_text())
    assert recorded["provenance"]["torch"] and recorded["provenance"]["cpu"]
    assert recorded["strategies"]["full"]["peak_mem_bytes"] > 0


def test_unreachable_accuracy_fails(sweep, tmp_path, capsys):
    out, baseline = sweep
    code, text = _check(out, _edit(baseline, tmp_path, "full", "macro_f1", lambda v: v + 0.2), capsys)
    assert code == 1
    assert "REGRESSION full: macro_f1" in text


def test_lower_baseline_memory_fails(sweep, tmp_path, capsys):
    out, baseline = sweep
    code, text = _check(out, _edit(baseline, tmp_path, "frozen", "peak_mem_bytes", lambda v: int(v * 0.5)), capsys)
    assert code == 1
    assert "REGRESSION frozen: peak_mem_bytes" in text


def test_different_parameter_count_fails(sweep, tmp_path, capsys):
    out, baseline = sweep
    code, text = _check(out, _edit(baseline, tmp_path, "frozen", "params_trainable", lambda v: v + 1), capsys)
    assert code == 1
    assert "REGRESSION frozen: params_trainable" in text


def test_strategy_missing_from_the_run_is_reported(sweep, tmp_path, capsys):
    out, baseline = sweep
    data = json.loads(baseline.read_text())
    data["strategies"]["ghost"] = dict(data["strategies"]["frozen"])
    edited = tmp_path / "ghost.json"
    edited.write_text(json.dumps(data))
    code, text = _check(out, edited, capsys)
    assert code == 1 and "ghost" in text and "MISSING" in text
