"""A run's identity is its whole setting: a finished result is never replaced by a run of another setting under the
same name (refused in one line, or set aside on request), resume keeps only a result of the same identity (config
and weights content), and every report groups runs by the one ``SETTING`` of bench/records.py, statistics included.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import records
from bench.measure import predictions, statistics
from bench.runner.experiments import expand, load_preset

ROOT = Path(__file__).resolve().parent.parent
NAME = "frozen__f2_b16_s0.json"


def _config(**train):
    base = load_preset("ci")
    base["train"].update(train)
    return expand(base, strategies=["frozen"], seeds=[0], frames=[2], batch_sizes=[16])[0].config


def _finished(cfg, *, weights_sha256: str | None = "a" * 64) -> dict:
    record = records.new_record(cfg, run_id="frozen__f2_b16_s0", status=records.OK, placement={}, environment={},
                                code={})
    record["weights"] = {"sha256": weights_sha256}
    return record


def _write(folder: Path, record: dict) -> Path:
    path = folder / NAME
    records.write_json_atomic(path, record)
    return path


def test_a_finished_run_of_another_setting_is_refused_in_one_line_and_kept(tmp_path):
    path = _write(tmp_path, _finished(_config(precision="fp32")))
    before = path.read_bytes()
    with pytest.raises(records.OtherSettingError) as caught:
        records.check_no_other_setting(path, _config(precision="bf16"))
    message = str(caught.value)
    assert message.startswith(f"{path}: holds a finished run of another setting (train.precision: there 'fp32', "
                              "here 'bf16')")
    assert "--replace-other-settings" in message and "\n" not in message
    assert path.read_bytes() == before


def test_on_request_the_other_setting_is_set_aside_byte_for_byte(tmp_path, capsys):
    path = _write(tmp_path, _finished(_config(epochs=1)))
    before = path.read_bytes()
    records.check_no_other_setting(path, _config(epochs=2), replace=True)
    kept = tmp_path / records.SET_ASIDE / f"frozen__f2_b16_s0.{records.OTHER_SETTING}.json"
    assert not path.exists() and kept.read_bytes() == before
    assert "train.epochs: there 1, here 2" in capsys.readouterr().err


def test_the_same_setting_a_failed_run_or_no_file_is_no_conflict(tmp_path):
    cfg = _config()
    records.check_no_other_setting(tmp_path / NAME, cfg)  # no file
    path = _write(tmp_path, _finished(cfg))
    records.check_no_other_setting(path, cfg, weights_sha256="a" * 64)
    failed = _finished(_config(epochs=5))
    failed["run"]["status"] = records.FAILED
    records.check_no_other_setting(_write(tmp_path, failed), cfg)  # a failure is no result to keep


def test_the_weights_content_is_part_of_the_identity(tmp_path):
    cfg = _config()
    path = _write(tmp_path, _finished(cfg, weights_sha256="a" * 64))
    assert records.identity_difference(records.read_result(path), cfg, "a" * 64) is None
    assert "weights sha256 aaaaaaaaaaaa.. there, bbbbbbbbbbbb.. here" in \
        records.identity_difference(records.read_result(path), cfg, "b" * 64)
    assert records.resume_decision(path, cfg, weights_sha256="b" * 64) == (None, None)
    assert records.resume_decision(path, cfg, weights_sha256="a" * 64)[0] == "finished earlier, skipped"
    with pytest.raises(records.OtherSettingError, match="same path, other content"):
        records.check_no_other_setting(path, cfg, weights_sha256="b" * 64)


def test_statistics_never_pool_an_fp32_and_a_bf16_run_as_two_seeds():
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 43)) < 0.3).astype(np.float32)
    probs = rng.random((40, 43)).astype(np.float32)

    def record(seed: int, precision: str) -> dict:
        config = {"data": {"dataset": "synthetic", "frames": 2}, "model": {"backbone": "tiny"},
                  "train": {"batch_size": 16, "seed": seed, "threshold": 0.45, "precision": precision}}
        return {"run": {"strategy": "full", "status": "ok", "config": config},
                "metrics": {"test_predictions": predictions.encode(probs, labels)}}

    stats = statistics.setting_stats(statistics.load_predictions([record(0, "fp32"), record(1, "bf16")]),
                                     resamples=200)
    assert sorted(dict(zip(records.SETTING, s.setting, strict=True))["precision"] for s in stats) == ["bf16", "fp32"]
    assert all(len(s.seeds["full"]) == 1 for s in stats)


def test_a_sweep_of_another_precision_into_the_same_folder_refuses_before_running(tmp_path):
    """As a user runs it: a finished fp32 run in ``runs/``, then the same command with ``--precision bf16``."""
    out = tmp_path / "runs"
    out.mkdir()
    cli = [sys.executable, str(ROOT / "run_bench.py"), "--preset", "ci", "--strategies", "frozen", "--out", "runs"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    spec = expand(load_preset("ci"), strategies=["frozen"], seeds=[0], frames=[2], batch_sizes=[16])[0]
    earlier = _finished(spec.config)
    earlier["run"]["config"]["train"]["precision"] = "fp32"
    path = _write(out, earlier)
    before = path.read_bytes()
    done = subprocess.run(cli + ["--precision", "bf16"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{path}: holds a finished run of another setting" in done.stderr
    assert "--replace-other-settings" in done.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == [NAME]  # no run started, nothing written
    assert json.loads(before)["run"]["config"]["train"]["precision"] == "fp32"
