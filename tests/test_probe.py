"""The linear probe of a backbone's frozen features: ROC AUC on hand-computed cases, a planted signal is found and
noise is not, groups average their columns, and ``main`` end to end on the smoke preset (files, exit codes)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.tools import probe
from data.schema import MARS


@pytest.mark.parametrize("scores,labels,expected", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # 3 of the 4 (positive, negative) pairs are ordered right
    ([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1], 1.0),
    ([0.4, 0.3, 0.2, 0.1], [0, 0, 1, 1], 0.0),
    ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # ties count one half
    ([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1], 0.875),  # one tied pair of four: (3 + 0.5) / 4
])
def test_roc_auc_on_hand_computed_cases(scores, labels, expected):
    assert probe.roc_auc(np.array(scores), np.array(labels)) == pytest.approx(expected)


def test_roc_auc_of_one_class_is_undefined():
    assert np.isnan(probe.roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_a_planted_linear_signal_is_found_and_noise_is_not():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.standard_normal((400, 20)), rng.standard_normal((400, 20))
    y_train = np.stack([x_train[:, 3] - x_train[:, 7] > 0, rng.random(400) < 0.5], axis=1).astype(np.float32)
    y_test = np.stack([x_test[:, 3] - x_test[:, 7] > 0, rng.random(400) < 0.5], axis=1).astype(np.float32)
    signal, noise = probe.probe_columns((x_train, y_train), (x_test, y_test))
    assert signal > 0.97
    assert abs(noise - 0.5) < 0.1


def test_a_column_with_one_class_in_training_is_left_out():
    x = np.random.default_rng(1).standard_normal((50, 4))
    y = np.zeros((50, 1), np.float32)
    assert np.isnan(probe.probe_columns((x, y), (x, y))[0])


def test_the_penalty_shrinks_the_weights():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 5))
    y = (x[:, 0] + 0.5 * rng.standard_normal(200) > 0).astype(np.float64)
    loose, _ = probe.fit_logistic(x, y, l2=1e-3)
    tight, _ = probe.fit_logistic(x, y, l2=1.0)
    assert np.abs(tight).sum() < 0.5 * np.abs(loose).sum()
    assert np.argmax(np.abs(loose)) == 0


def test_groups_average_their_columns_and_keep_their_kind():
    aucs = np.full(MARS.num_columns, 0.5)
    cols = dict(zip((g.name for g in MARS.groups), MARS.group_slices(), strict=True))
    aucs[cols["top colour"]] = np.linspace(0.6, 1.0, MARS.group("top colour").width)
    aucs[cols["hat"]] = np.nan
    groups = probe.group_aucs(aucs, MARS)
    assert groups["top colour"]["auc"] == pytest.approx(0.8) and groups["top colour"]["columns"] == 9
    assert groups["hat"]["auc"] is None
    assert groups["motion"] == {"kind": "temporal", "auc": 0.5, "columns": 5}


class _TokensOfTheLabel(torch.nn.Module):
    """A stand-in tower whose class token holds the first label of the clip (read from the frame's first pixel)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = torch.randn(images.shape[0], 5, 3)
        tokens[:, 0, 0] = images[:, 0, 0, 0]
        return tokens


def test_pooled_features_keep_the_class_token_and_pool_over_tokens():
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    videos = torch.zeros(3, 2, 3, 4, 4)
    videos[:, :, 0, 0, 0] = labels[:, :1]  # both frames carry the first label
    dataset = list(zip(videos, labels, strict=True))
    features, kept = probe.pooled_features(_TokensOfTheLabel(), dataset, batch_size=2)
    assert features.shape == (3, 9)  # [mean over tokens, max over tokens, class token] of width 3
    assert np.array_equal(features[:, 6], labels[:, 0].numpy()) and np.array_equal(kept, labels.numpy())


def test_main_probes_the_smoke_preset_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "probe"
    assert probe.main(["--preset", "smoke", "--pretrained", "none", "--out", str(out)]) == 0
    record = json.loads((out / "probe.json").read_text())
    assert record["schema_version"] == probe.SCHEMA_VERSION and record["kind"] == probe.KIND
    assert record["pretrained"] == "none"
    assert set(record["groups"]) == {g.name for g in MARS.groups}
    assert all(g["auc"] is None or 0.0 <= g["auc"] <= 1.0 for g in record["groups"].values())
    assert record["clips"]["train"] > 0 and record["weights"]["source"] == "none"
    assert "| top colour" in (out / "probe.md").read_text()
    assert "test ROC AUC" in capsys.readouterr().out


def test_missing_weights_are_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.tools.probe", "--preset", "smoke", "--pretrained",
                           str(tmp_path / "absent.safetensors"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "absent.safetensors" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_penalty_that_is_not_positive_is_refused(capsys):
    assert probe.main(["--l2", "0", "--out", "unused"]) == 2
    assert "--l2 must be > 0, got 0.0" in capsys.readouterr().err
