"""Loading CLIP through open_clip: an architecture name plus ``pretrained`` = an open_clip tag, a local file, or none.

Small architectures for the embedded default and the tests live as open_clip JSON configs in ``models/configs``
and are registered with ``open_clip.add_model_config`` (open_clip's own extension point), so ``par-vit-tiny`` is
created exactly like ``ViT-B-16``.

Offline behaviour: open_clip fetches tags from the Hugging Face hub, which retries for ~46 s without a network.
When ``HF_HUB_OFFLINE`` is set or the hub host does not answer within a second, hub access is switched to offline
mode first, so a missing download fails at once with a message saying how to supply weights.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import open_clip
import torch

CONFIG_DIR = Path(__file__).parent / "configs"
PROJECT_DIR = Path(__file__).resolve().parent.parent
NO_WEIGHTS = (None, "", "none")
_HUB_HOST = ("huggingface.co", 443)


class BackboneError(ValueError):
    """A backbone name or its weights cannot be used; the message says how to fix it."""


def register_local_configs() -> None:
    """Make the architectures in models/configs known to open_clip (idempotent)."""
    if not set(p.stem for p in CONFIG_DIR.glob("*.json")) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


def _hub_reachable(timeout_s: float = 1.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(_HUB_HOST, timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _force_hub_offline() -> None:
    import huggingface_hub.constants as hub_constants

    hub_constants.HF_HUB_OFFLINE = True


def _local_weights(pretrained: str) -> Path | None:
    """A weights file given as a path, relative to the working directory or to the project (shipped weights)."""
    for candidate in (Path(pretrained), PROJECT_DIR / pretrained):
        if candidate.is_file():
            return candidate
    return None


def _check_tag(name: str, tag: str) -> None:
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise BackboneError(f"--pretrained {tag!r}: not an existing file and not an open_clip tag of {name!r} "
                            f"(tags: {', '.join(tags) or 'none'})")


def _weights_help(name: str, tag: str) -> str:
    return (f"cannot load open_clip weights {name}/{tag} (no network or hub offline). Supply them as a local file: "
            f"download once where a network exists, e.g. open_clip.create_model('{name}', pretrained='{tag}') "
            f"caches them under ~/.cache/huggingface, or pass --pretrained /path/to/open_clip_model.safetensors")


def create_clip(name: str, pretrained: str | None = None) -> torch.nn.Module:
    """Build the open_clip CLIP model ``name`` with weights from a tag, a local file, a ``local-dir:`` or none."""
    register_local_configs()
    if name.startswith("local-dir:"):
        return open_clip.create_model(name)
    if name not in open_clip.list_models():
        raise BackboneError(f"--backbone {name!r} is not an open_clip architecture; see open_clip.list_models()")
    if pretrained in NO_WEIGHTS:
        return open_clip.create_model(name, pretrained=None)
    local = _local_weights(pretrained)
    if local is not None:
        return open_clip.create_model(name, pretrained=str(local))
    _check_tag(name, pretrained)
    if not _hub_reachable():
        _force_hub_offline()
    try:
        return open_clip.create_model(name, pretrained=pretrained)
    except Exception as error:  # hub / cache failures come in many types
        raise BackboneError(_weights_help(name, pretrained)) from error


def tokenizer_for(name: str):
    register_local_configs()
    return open_clip.get_tokenizer(name)


def _square(size) -> int:
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def image_size_of(visual: torch.nn.Module) -> int:
    """Input resolution of an open_clip visual tower (square inputs)."""
    return _square(visual.image_size)


def configured_image_size(name: str) -> int:
    """Input resolution of architecture ``name`` from its open_clip config, without building it."""
    register_local_configs()
    config = open_clip.get_model_config(name)
    if config is None:
        raise BackboneError(f"model.backbone {name!r}: unknown open_clip architecture")
    return _square(config["vision_cfg"]["image_size"])
