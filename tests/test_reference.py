"""The reference CNN: shapes, its input size follows the configured CLIP, and ``main`` end to end on the smoke
preset through the benchmark's own loop."""
from __future__ import annotations

import json

import pytest
import torch

from bench.tools import reference
from data.schema import MARS
from models.backbone import BackboneError, configured_image_size


@pytest.mark.parametrize("frames,size", [(3, 48), (1, 32)])
def test_frame_cnn_maps_a_video_to_one_logit_per_attribute(frames, size):
    model = reference.FrameCNN(MARS.num_columns).eval()
    out = model(torch.randn(2, frames, 3, size, size))
    assert out.shape == (2, MARS.num_columns)


def test_frame_cnn_starts_at_the_prior_logits():
    """The closing BatchNorm centres the raw logits over the batch, so its shift is the batch-mean logit."""
    torch.manual_seed(0)
    model = reference.FrameCNN(4).train()
    prior = torch.tensor([-2.0, -1.0, 0.5, 1.0])
    model.init_prior(prior)
    assert torch.allclose(model(torch.randn(8, 2, 3, 32, 32)).mean(0), prior, atol=1e-5)


def test_input_size_follows_the_configured_clip():
    assert configured_image_size("par-vit-tiny") == 48 and configured_image_size("par-vit-micro") == 32
    assert configured_image_size("ViT-B-16") == 224
    with pytest.raises(BackboneError, match="nope"):
        configured_image_size("nope")


def test_main_trains_with_the_benchmark_loop_and_writes_a_result(tmp_path, capsys):
    assert reference.main(["--preset", "smoke", "--epochs", "2", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    assert record["run"]["strategy"] == "reference_cnn" and record["run"]["status"] == "ok"
    assert record["run"]["config"]["train"]["epochs"] == 2
    assert record["profile"]["train_steps"] == 2 * (64 // 16)  # smoke: 64 training clips, batch 16
    test, majority = record["metrics"]["test"], record["metrics"]["majority_test"]
    assert 0.0 <= test["macro_f1"] <= 1.0 and set(test["per_group"]) == {g.name for g in MARS.groups}
    assert majority["num_samples"] == test["num_samples"] == 32
    assert "reference_cnn: test macro-F1" in capsys.readouterr().out


def test_bad_epochs_exit_non_zero_and_write_nothing(tmp_path, capsys):
    assert reference.main(["--preset", "smoke", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err and not list(tmp_path.iterdir())
