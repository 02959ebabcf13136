"""Training curves come from each run's per-epoch history: the drawn lines are the recorded values (the mean over
seeds where a strategy has several), the chosen epoch is starred, settings never share an axis, and a folder without
any history still gets a figure that says so."""
from __future__ import annotations

import numpy as np
import pytest

from bench.reporting import curves, plots
from tests.test_report import fake_record

LOSSES = {("full", 0): [3.0, 2.0, 1.5], ("full", 1): [3.2, 2.2, 1.3], ("lora", 0): [2.5, 2.1, 1.9]}
VALID = {("full", 0): [0.30, 0.50, 0.45], ("full", 1): [0.32, 0.40, 0.52], ("lora", 0): [0.20, 0.35, 0.40]}


def with_history(strategy: str, *, seed: int = 0, frames: int = 2, metric: str = "macro_f1") -> dict:
    """A fake record whose history is ``LOSSES`` / ``VALID``; the best epoch is that of the highest val value."""
    record = fake_record(strategy, seed=seed, frames=frames)
    losses, valid = LOSSES[(strategy, seed)], VALID[(strategy, seed)]
    record["metrics"]["history"] = [{"epoch": e + 1, "train_loss": loss, f"val_{metric}": v, "elapsed_s": 10.0 * e}
                                    for e, (loss, v) in enumerate(zip(losses, valid, strict=True))]
    record["metrics"]["best_epoch"] = int(np.argmax(valid)) + 1
    return record


@pytest.fixture(scope="module")
def history():
    records = [with_history("full", seed=0), with_history("full", seed=1), with_history("lora"),
               with_history("lora", frames=4), fake_record("adapter", f1=None)]  # adapter: profile-only, no history
    return curves.history_frame(records)


def test_history_frame_holds_every_epoch_of_every_run(history):
    assert len(history) == 4 * 3 and set(history["strategy"]) == {"full", "lora"}
    lora = history[(history["strategy"] == "lora") & (history["frames"] == 2)]
    assert lora["train_loss"].tolist() == LOSSES[("lora", 0)] and lora["val_value"].tolist() == VALID[("lora", 0)]
    assert lora["chosen"].tolist() == [False, False, True] and set(lora["val_metric"]) == {"macro_f1"}


def test_lines_are_the_recorded_history_mean_over_seeds(history):
    fig = curves.curves_figure(history, title="t", families={"full": "full", "lora": "lora"})
    loss_ax, val_ax = fig.axes[0], fig.axes[1]  # first setting: 2 frames
    assert loss_ax.get_title() == "training loss" and fig.subfigs[0].get_suptitle().startswith("dataset")
    drawn = {name: line.get_xydata() for name, line in zip(["full", "lora"], loss_ax.get_lines(), strict=True)}
    assert drawn["lora"][:, 0].tolist() == [1, 2, 3] and drawn["lora"][:, 1].tolist() == LOSSES[("lora", 0)]
    assert drawn["full"][:, 1] == pytest.approx(np.mean([LOSSES[("full", 0)], LOSSES[("full", 1)]], axis=0))
    full_val = val_ax.get_lines()[0].get_xydata()[:, 1]
    assert full_val == pytest.approx(100 * np.mean([VALID[("full", 0)], VALID[("full", 1)]], axis=0))
    assert val_ax.get_ylabel() == "validation macro-F1 (%)"
    colours = plots.palette(["full", "lora"], {"full": "full", "lora": "lora"})
    assert np.allclose(plots.matplotlib.colors.to_rgb(loss_ax.get_lines()[1].get_color()), colours["lora"])
    assert len(loss_ax.collections) >= 2  # the ± std band of full's two seeds and the chosen-epoch stars


def test_chosen_epoch_of_each_run_is_starred_at_its_own_value(history):
    fig = curves.curves_figure(history, title="t", families={})
    stars = fig.axes[1].collections[-1].get_offsets()  # validation panel, 2 frames
    assert sorted((float(x), round(float(y), 6)) for x, y in stars) == [(2.0, 50.0), (3.0, 40.0), (3.0, 52.0)]
    # full seed 0 chose epoch 2, full seed 1 and lora epoch 3: each at its own value, not at the mean line


def test_each_setting_gets_its_own_row(history):
    fig = curves.curves_figure(history, title="t", families={})
    assert len(fig.subfigs) == 2 and len(fig.axes) == 4
    assert "4 frames" in fig.subfigs[1].get_suptitle()
    only_lora = fig.axes[2].get_lines()
    assert len(only_lora) == 1 and only_lora[0].get_xydata()[:, 1].tolist() == LOSSES[("lora", 0)]


def test_no_history_says_so():
    fig = curves.curves_figure(curves.history_frame([fake_record("full", f1=None)]), title="t", families={})
    assert any("no run recorded a per-epoch history" in t.get_text() for t in fig.axes[0].texts)
