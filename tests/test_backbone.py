"""Backbone loading: architecture names, local checkpoint files, and a fast, clear failure offline."""
from __future__ import annotations

import time

import pytest
import torch

from models.backbone import CONFIG_DIR, BackboneError, create_clip, image_size_of, tokenizer_for


def test_small_configs_are_registered_with_open_clip():
    model = create_clip("par-vit-tiny")
    assert image_size_of(model.visual) == 48
    assert tokenizer_for("par-vit-tiny")(["a pedestrian"]).shape == (1, 32)


def test_missing_download_fails_fast_and_says_how_to_supply_weights():
    start = time.perf_counter()
    with pytest.raises(BackboneError, match="--pretrained /path/to"):
        create_clip("ViT-B-16", "openai")
    assert time.perf_counter() - start < 1.0


def test_unknown_tag_and_unknown_architecture_are_rejected():
    with pytest.raises(BackboneError, match="not an open_clip tag"):
        create_clip("par-vit-micro", "no-such-tag")
    with pytest.raises(BackboneError, match="not an open_clip architecture"):
        create_clip("ViT-Nope", None)


def test_local_checkpoint_file_loads_exactly(tmp_path):
    source = create_clip("par-vit-micro")
    path = tmp_path / "micro.pt"
    torch.save(source.state_dict(), path)
    loaded = create_clip("par-vit-micro", str(path))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_local_dir_checkpoint_loads(tmp_path):
    source = create_clip("par-vit-micro")
    (tmp_path / "open_clip_config.json").write_text(
        '{"model_cfg": ' + (CONFIG_DIR / "par-vit-micro.json").read_text()
        + ', "preprocess_cfg": {}}')
    torch.save(source.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    loaded = create_clip(f"local-dir:{tmp_path}")
    assert torch.equal(loaded.visual.proj, source.visual.proj)
