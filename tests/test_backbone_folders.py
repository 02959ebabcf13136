"""Folders of weights (local-dir, hub cache) and the activation they record: a config without a ``quick_gelu`` key
says nothing about the weights, a hub-cache folder of an open_clip tag's repository takes that tag's flag, and
``local-dir:`` honours a forced ``model.activation`` like every other source."""
from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from models.backbone import create_clip

MICRO = "par-vit-micro"  # its open_clip config uses GELU


def _activations(model) -> set[str]:
    return {type(block.mlp.gelu).__name__ for block in model.visual.transformer.resblocks}


def _recorded(model) -> tuple[str, str, str | None]:
    info = model.weights_info
    return info.activation, info.activation_from, info.weights_activation


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return create_clip(MICRO)


def _folder(root, source, *, quick_gelu: bool | None):
    """An open_clip folder in the real layout: ``open_clip_config.json`` (``model_cfg``, with or without the key)
    and ``open_clip_model.safetensors``."""
    root.mkdir(parents=True)
    model_cfg = {k: v for k, v in open_clip.get_model_config(MICRO).items() if k != "quick_gelu"}
    if quick_gelu is not None:
        model_cfg["quick_gelu"] = quick_gelu
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(root / "open_clip_model.safetensors"))
    return root


def _hub(tmp_path, source, repo_folder: str, *, quick_gelu: bool | None):
    hub = tmp_path / repo_folder
    _folder(hub / "snapshots" / "abc123", source, quick_gelu=quick_gelu)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("abc123")
    return hub


def test_a_folder_config_without_the_key_leaves_the_activation_to_the_architecture(tmp_path, source):
    local = _folder(tmp_path / "local", source, quick_gelu=None)
    assert _recorded(create_clip(MICRO, str(local))) == ("gelu", "architecture", None)
    hub = _hub(tmp_path, source, "models--someone--micro", quick_gelu=None)
    model = create_clip(MICRO, str(hub))
    assert model.weights_info.source == "hub-cache" and _recorded(model) == ("gelu", "architecture", None)
    assert _recorded(create_clip(MICRO, str(local), activation="quick_gelu")) == ("quick_gelu", "forced", None)


def test_a_hub_cache_folder_of_an_open_clip_tag_takes_the_tags_flag(tmp_path, source):
    """open_clip's ``ViT-B-16`` / ``openai`` lives in hub repository timm/vit_base_patch16_clip_224.openai with
    ``quick_gelu: True`` in open_clip's tag table; its folder config need not carry the key."""
    assert open_clip.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"].strip("/") == \
        "timm/vit_base_patch16_clip_224.openai"
    hub = _hub(tmp_path, source, "models--timm--vit_base_patch16_clip_224.openai", quick_gelu=None)
    model = create_clip(MICRO, str(hub))
    assert _activations(model) == {"QuickGELU"} and _recorded(model) == ("quick_gelu", "weights", "quick_gelu")
    keyed = _hub(tmp_path / "keyed", source, "models--timm--vit_base_patch16_clip_224.openai", quick_gelu=False)
    assert _recorded(create_clip(MICRO, str(keyed))) == ("gelu", "weights", "gelu")  # the folder's own key wins


def test_local_dir_honours_a_forced_activation_and_records_why(tmp_path, source):
    plain = _folder(tmp_path / "plain", source, quick_gelu=None)
    model = create_clip(f"local-dir:{plain}")
    assert _activations(model) == {"GELU"} and _recorded(model) == ("gelu", "architecture", None)
    model = create_clip(f"local-dir:{plain}", activation="quick_gelu")
    assert _activations(model) == {"QuickGELU"} and _recorded(model) == ("quick_gelu", "forced", None)
    assert torch.equal(model.visual.proj, source.visual.proj)  # the folder's weights, not a random init
    quick = _folder(tmp_path / "quick", source, quick_gelu=True)
    assert _recorded(create_clip(f"local-dir:{quick}")) == ("quick_gelu", "weights", "quick_gelu")
    with pytest.warns(UserWarning, match="forced against weights trained with QuickGELU"):
        model = create_clip(f"local-dir:{quick}", activation="gelu")
    assert _activations(model) == {"GELU"} and _recorded(model) == ("gelu", "forced", "quick_gelu")
