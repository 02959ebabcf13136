"""Training checkpoints: a run stopped after an epoch continues from its checkpoint to exactly the figures of the run
that was never stopped (same seed, same process settings), and a sweep's worker keeps the checkpoint of a preempted
run for its resume and removes it once the run has its final record."""
from __future__ import annotations

import pytest
import torch

import run_bench
from bench.config import merge
from bench.records import read_result
from bench.runner.experiments import expand, load_preset
from bench.runner.worker import Preempted
from bench.training import checkpoint

# The smoke model with dropout-free layers still draws random numbers every epoch: frame offsets, shuffling, and
# the DataLoader's base seed. Three epochs: the stop falls between epochs 2 and 3.
SETTING = {"train": {"epochs": 3}, "profile": {"enabled": False}}


def _config(strategy: str = "full"):
    base = merge(load_preset("smoke"), SETTING)
    return expand(base, strategies=[strategy], seeds=[0], frames=[2], batch_sizes=[16])[0].config


def _untimed(metrics: dict) -> dict:
    history = [{k: v for k, v in epoch.items() if k != "elapsed_s"} for epoch in metrics["history"]]
    return {**metrics, "history": history}


def _stop_before_epoch(monkeypatch, stop_at: int) -> None:
    """Preempt the run as its epoch ``stop_at`` (0-based) begins, as a signal between epochs would."""
    import bench.training.run

    real = bench.training.run.train_epoch

    def train_epoch(*args, epoch, **kwargs):
        if epoch == stop_at:
            raise Preempted("preempted by SIGTERM")
        return real(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(bench.training.run, "train_epoch", train_epoch)


@pytest.mark.parametrize("strategy", ["full", "side"])
def test_a_run_continued_from_its_checkpoint_equals_the_run_never_stopped(strategy, tmp_path, monkeypatch):
    from bench.training.run import run_one

    threads = torch.get_num_threads()
    whole = run_one(_config(strategy))
    saved = tmp_path / "run.pt"
    with monkeypatch.context() as patch:
        _stop_before_epoch(patch, stop_at=2)
        with pytest.raises(Preempted):
            run_one(_config(strategy), checkpoint_file=saved)
    assert torch.load(saved, weights_only=False)["epoch"] == 2
    continued = run_one(_config(strategy), checkpoint_file=saved)
    assert torch.get_num_threads() == threads
    mine, theirs = _untimed(continued["metrics"]), _untimed(whole["metrics"])
    for key in ("test", "val", "best_epoch", "history", "test_predictions", "train_subset", "own_params_effect"):
        assert mine[key] == theirs[key], key
    assert continued["profile"]["train_steps"] == whole["profile"]["train_steps"]


def test_an_unreadable_checkpoint_starts_the_run_again_and_says_so(tmp_path, capsys):
    from bench.training.run import run_one

    saved = tmp_path / "run.pt"
    saved.write_bytes(b"not a checkpoint")
    record = run_one(_config("frozen"), checkpoint_file=saved)
    assert record["metrics"]["history"][0]["epoch"] == 1
    assert "unreadable training checkpoint" in capsys.readouterr().out


PLUGIN = """
import os, signal
from strategies.frozen import FrozenConfig, apply as frozen
from strategies.registry import register


def stop_once(model, cfg):
    model = frozen(model, cfg)
    marker = os.environ["STOP_MARKER"]

    def hook(step):
        if step == 5 and not os.path.exists(marker):  # the first step of epoch 2 (4 steps an epoch)
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGTERM)

    model.step_hooks.append(hook)
    return model


register("stops", config=FrozenConfig, apply=stop_once, description="preempted once, in epoch 2")
"""


def test_a_sweep_keeps_a_preempted_runs_checkpoint_and_resumes_from_it(tmp_path, monkeypatch, capsys):
    """Through the CLI: a run preempted in its second epoch leaves ``.checkpoints/``; the resumed sweep continues
    after epoch 1 and removes the checkpoint once the run is recorded."""
    (tmp_path / "stop_plugin.py").write_text(PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PAR_BENCH_PLUGINS", "stop_plugin")
    monkeypatch.setenv("STOP_MARKER", str(tmp_path / "stopped"))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "runs"
    args = ["--preset", "smoke", "--epochs", "3", "--strategies", "stops", "--out", str(out)]
    assert run_bench.main(args) == 1
    assert read_result(out / "stops__f2_b16_s0.json")["run"]["status"] == "preempted"
    kept = list((out / checkpoint.CHECKPOINTS).glob("stops__f2_b16_s0-*.pt"))
    assert len(kept) == 1 and torch.load(kept[0], weights_only=False)["epoch"] == 1
    capsys.readouterr()
    assert run_bench.main(args) == 0
    record = read_result(out / "stops__f2_b16_s0.json")
    assert record["run"]["status"] == "ok" and [e["epoch"] for e in record["metrics"]["history"]] == [1, 2, 3]
    assert not list((out / checkpoint.CHECKPOINTS).glob("*.pt"))
