"""Loading CLIP through open_clip: an architecture name plus weights in any form a VTF / VTFPAR++ user has.

``pretrained`` may be

* ``None`` / ``"none"``: random initialisation;
* an open_clip tag (``openai``, ``laion2b_s34b_b88k``...): resolved through open_clip's own download cache;
* a file: an open_clip ``.safetensors`` / ``.bin`` / ``.pt`` state dict, OpenAI's TorchScript archive as the ``clip``
  package caches it (``~/.cache/clip/ViT-B-16.pt``), or a plain OpenAI state dict;
* a folder: an open_clip ``local-dir`` (``open_clip_config.json`` + weights) or a Hugging Face hub-cache folder
  (``models--timm--vit_base_patch16_clip_224.openai``, with ``snapshots/<revision>/``).

The activation follows the weights (``model.activation = "auto"``): OpenAI's CLIP was trained with QuickGELU
(x * sigmoid(1.702 x)), while open_clip's ``ViT-B-16`` config uses ``nn.GELU``; a model built with the wrong one
runs every block's MLP with an activation its weights never saw. Where the weights say which they need -- OpenAI's
formats, an open_clip tag's ``quick_gelu`` flag, a ``quick_gelu`` key in a folder's ``open_clip_config.json``, the
flag of the open_clip tag whose hub repository a hub-cache folder holds -- that one is used (``activation_from``
"weights"); otherwise the architecture's own ("architecture"; for ``local-dir:`` the folder's config). ``"quick_gelu"``
/ ``"gelu"`` force one, for every source including ``local-dir:`` (a forced choice against the weights is reported).
A plain OpenAI state dict is recognised by the keys OpenAI's checkpoints carry beside the weights
(``input_resolution``, ``context_length``, ``vocab_size``); one saved without them is indistinguishable from an
open_clip state dict of the same architecture: set ``model.activation`` to ``quick_gelu`` for it.

Every checkpoint is checked against the architecture before loading: the first missing, unexpected or mis-shaped
key fails in one line naming the file. What was loaded (source, format, activation, the file's SHA-256) is kept as
``model.weights_info`` and recorded in every result.

Small architectures for the embedded default and the tests live as open_clip JSON configs in ``models/configs`` and
are registered with ``open_clip.add_model_config`` (open_clip's own extension point).

Offline behaviour: open_clip fetches tags from the Hugging Face hub, which retries for ~46 s without a network.
When ``HF_HUB_OFFLINE`` is set or the hub host does not answer within a second, hub access is switched to offline
mode first, so a missing download fails at once with a message saying how to supply weights.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import warnings
import zipfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import open_clip
import torch

from models import openai_archive

CONFIG_DIR = Path(__file__).parent / "configs"
PROJECT_DIR = Path(__file__).resolve().parent.parent
NO_WEIGHTS = (None, "", "none")
ACTIVATIONS = ("auto", "quick_gelu", "gelu")
OPENAI_MARKER_KEYS = ("input_resolution", "context_length", "vocab_size")  # stored beside the weights by OpenAI
DIR_CHECKPOINTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                   "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin")
_HUB_HOST = ("huggingface.co", 443)


class BackboneError(ValueError):
    """A backbone name or its weights cannot be used; the message says how to fix it."""

    bad_input = True  # a bench.errors.BenchError: the command line prints the message alone (exit 2)


@dataclass(frozen=True)
class WeightsInfo:
    """What a backbone was built from: recorded in every result so two runs' weights can be compared."""

    source: str                 # none / tag / file / local-dir / hub-cache
    format: str                 # random / open_clip-tag / open_clip-safetensors / open_clip-state-dict /
    #                             openai-torchscript / openai-state-dict
    activation: str             # quick_gelu / gelu: what the model runs
    activation_from: str        # why: weights / architecture / forced
    weights_activation: str | None  # what the weights were trained with, where they say (None: unknown)
    path: str | None = None
    sha256: str | None = None
    tag: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Checkpoint:
    state_dict: dict
    format: str
    quick_gelu: bool | None  # what the weights need, where the format says


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


def _local_path(pretrained: str) -> Path | None:
    """A weights file or folder given as a path, relative to the working directory or the project (shipped)."""
    for candidate in (Path(pretrained).expanduser(), PROJECT_DIR / pretrained):
        if candidate.exists():
            return candidate
    return None


def _weights_help(name: str, tag: str) -> str:
    return (f"--pretrained {tag!r}: cannot load open_clip weights {name}/{tag} (no network or hub offline). Supply "
            f"them locally: --pretrained /path/to/ViT-B-16.pt (OpenAI's file, as the clip package caches it in "
            f"~/.cache/clip), an open_clip .safetensors / .bin, or a hub-cache folder (downloaded once where a "
            f"network exists, e.g. open_clip.create_model('{name}', pretrained='{tag}'))")


# --- reading checkpoint files ------------------------------------------------------------------------------------

def is_torchscript(path: Path) -> bool:
    """TorchScript archives (what ``clip.load`` caches) are zip files with a ``code/`` tree and ``constants.pkl``;
    plain ``torch.save`` zips have neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _unwrap(checkpoint, path: Path) -> dict:
    """A training checkpoint's ``state_dict`` entry, without DataParallel's ``module.`` prefix."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint or not all(torch.is_tensor(v) for v in checkpoint.values()):
        raise BackboneError(f"--pretrained {path}: holds no state dict of tensors (got {type(checkpoint).__name__}); "
                            "expected a CLIP checkpoint")
    if all(key.startswith("module.") for key in checkpoint):
        checkpoint = {key[len("module."):]: value for key, value in checkpoint.items()}
    return checkpoint


def read_checkpoint(path: Path) -> _Checkpoint:
    """Read a checkpoint file of any supported format; never unpickles arbitrary objects (``weights_only``)."""
    if path.stat().st_size == 0:
        raise BackboneError(f"--pretrained {path}: empty file, expected a CLIP checkpoint")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return _classified(_unwrap(load_file(str(path)), path), "open_clip-safetensors")
        if is_torchscript(path):  # read without TorchScript, which newer torch deprecates (models/openai_archive.py)
            return _Checkpoint(_unwrap(openai_archive.read_state_dict(path), path), "openai-torchscript", True)
        return _classified(_unwrap(torch.load(path, map_location="cpu", weights_only=True), path),
                           "open_clip-state-dict")
    except BackboneError:
        raise
    except Exception as error:  # corrupt or foreign files fail in many library-specific ways
        raise BackboneError(f"--pretrained {path}: not a readable checkpoint ({type(error).__name__}); expected an "
                            "open_clip .safetensors / .bin or OpenAI's TorchScript .pt") from None


def _classified(state_dict: dict, default_format: str) -> _Checkpoint:
    if any(key in state_dict for key in OPENAI_MARKER_KEYS):
        return _Checkpoint(state_dict, "openai-state-dict", True)
    return _Checkpoint(state_dict, default_format, None)


@lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_path(path: Path) -> str:
    """How a weights file is named in a result: relative to the project when it lies inside it (the shipped weights),
    else its absolute path."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(PROJECT_DIR))
    except ValueError:
        return str(resolved)


def weights_file_sha256(pretrained: str | None) -> str | None:
    """SHA-256 of the weights file ``--pretrained`` names, found as the loader finds it (``_local_path``); None for
    tags, folders and random weights, whose identity is their name."""
    local = _local_path(pretrained) if pretrained and pretrained not in NO_WEIGHTS else None
    return file_sha256(local) if local is not None and local.is_file() else None


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


# --- fitting a state dict to an architecture -----------------------------------------------------------------------

def _normalised(state_dict: dict, model: torch.nn.Module) -> dict:
    """OpenAI's extra keys dropped; open_clip's own conversions (old text layout, scalar logit scale)."""
    state_dict = {k: v for k, v in state_dict.items() if k not in OPENAI_MARKER_KEYS}
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = open_clip.factory.convert_to_custom_text_state_dict(state_dict)
    expected = model.state_dict()
    for key in ("logit_scale", "logit_bias"):
        if key in state_dict and key in expected and state_dict[key].numel() == expected[key].numel():
            state_dict[key] = state_dict[key].reshape(expected[key].shape)
    return state_dict


def check_fits(state_dict: dict, model: torch.nn.Module, *, path: Path, name: str) -> None:
    """Fail in one line on the first key that is missing, unexpected or of another shape than ``name`` needs."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise BackboneError(f"--pretrained {path}: key {key!r} missing; --backbone {name} expects it with shape "
                                f"{tuple(tensor.shape)} ({len(state_dict)} keys in the file, {len(expected)} expected)")
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise BackboneError(f"--pretrained {path}: key {key!r} has shape {tuple(state_dict[key].shape)}; "
                                f"--backbone {name} expects {tuple(tensor.shape)}")
    extra = [key for key in state_dict if key not in expected]
    if extra:
        raise BackboneError(f"--pretrained {path}: unexpected key {extra[0]!r} ({len(extra)} in all) for --backbone "
                            f"{name}")


# --- choosing the activation ---------------------------------------------------------------------------------------

def architecture_quick_gelu(name: str) -> bool:
    config = open_clip.get_model_config(name)
    return bool(config and config.get("quick_gelu", False))


def choose_activation(name: str, weights_quick_gelu: bool | None, activation: str) -> tuple[bool, str]:
    """(use QuickGELU, why): the weights' need where known, else the architecture's; or the forced one."""
    if activation not in ACTIVATIONS:
        raise BackboneError(f"model.activation: expected one of {ACTIVATIONS}, got {activation!r}")
    if activation != "auto":
        quick = activation == "quick_gelu"
        if weights_quick_gelu is not None and weights_quick_gelu != quick:
            warnings.warn(f"model.activation {activation!r} forced against weights trained with "
                          f"{'QuickGELU' if weights_quick_gelu else 'GELU'}", UserWarning, stacklevel=3)
        return quick, "forced"
    if weights_quick_gelu is not None:
        return weights_quick_gelu, "weights"
    return architecture_quick_gelu(name), "architecture"


def _activation_name(quick: bool | None) -> str | None:
    return None if quick is None else ("quick_gelu" if quick else "gelu")


# --- resolving where the weights are -------------------------------------------------------------------------------

def _hub_snapshot(folder: Path) -> Path:
    """The snapshot a hub-cache folder's ``refs/main`` names, else its newest snapshot."""
    ref = folder / "refs" / "main"
    if ref.is_file() and (folder / "snapshots" / ref.read_text().strip()).is_dir():
        return folder / "snapshots" / ref.read_text().strip()
    snapshots = sorted((folder / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime)
    if not snapshots:
        raise BackboneError(f"--pretrained {folder}: hub-cache folder without snapshots")
    return snapshots[-1]


def _folder_weights(folder: Path) -> tuple[Path, bool | None, str]:
    """(checkpoint file, QuickGELU need of the weights if the folder says, source) of a local-dir or hub-cache folder.

    What the folder says: its ``open_clip_config.json``'s ``quick_gelu`` key where present; else, for a hub-cache
    folder of an open_clip tag's hub repository (``models--timm--vit_base_patch16_clip_224.openai``), that tag's flag
    (``_hub_repo_quick_gelu``); else nothing (None: the weights do not say, the architecture decides). A config
    without the key says how open_clip would build the model, not what the weights were trained with: open_clip's
    hub configs of OpenAI's weights need the tag's flag to get QuickGELU."""
    source, repo = "local-dir", None
    if (folder / "snapshots").is_dir():
        repo = _hub_repo_id(folder)
        folder, source = _hub_snapshot(folder), "hub-cache"
    checkpoint = next((folder / n for n in DIR_CHECKPOINTS if (folder / n).is_file()), None)
    if checkpoint is None:
        raise BackboneError(f"--pretrained {folder}: no checkpoint file in the folder (expected one of "
                            f"{', '.join(DIR_CHECKPOINTS)})")
    quick = _config_quick_gelu(folder / "open_clip_config.json")
    if quick is None and repo is not None:
        quick = _hub_repo_quick_gelu(repo)
    return checkpoint, quick, source


def _config_quick_gelu(path: Path) -> bool | None:
    """The ``quick_gelu`` key of an open_clip folder config (under ``model_cfg``), None where absent."""
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    value = config.get("model_cfg", config).get("quick_gelu")
    return None if value is None else bool(value)


def _hub_repo_id(folder: Path) -> str | None:
    """``models--org--name`` (the Hugging Face cache's folder naming) -> ``org/name``; None for other names."""
    name = folder.name
    if not name.startswith("models--") or "--" not in name[len("models--"):]:
        return None
    return name[len("models--"):].replace("--", "/", 1)


def _hub_repo_quick_gelu(repo: str) -> bool | None:
    """The ``quick_gelu`` flag of the open_clip tag whose weights live in hub repository ``repo``, if one does."""
    for name in open_clip.list_models():
        for tag in open_clip.list_pretrained_tags_by_model(name):
            cfg = open_clip.get_pretrained_cfg(name, tag)
            if cfg.get("hf_hub", "").strip("/") == repo:
                return bool(cfg.get("quick_gelu", False))
    return None


def _tag_weights(name: str, tag: str) -> tuple[Path, bool]:
    """The cached file of an open_clip tag (downloaded if the hub answers) and the tag's QuickGELU flag."""
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise BackboneError(f"--pretrained {tag!r}: not an existing file or folder and not an open_clip tag of "
                            f"{name!r} (tags: {', '.join(tags) or 'none'})")
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not _hub_reachable():
        _force_hub_offline()
    try:
        path = open_clip.pretrained.download_pretrained(cfg)
    except Exception as error:  # hub / cache failures come in many types
        raise BackboneError(_weights_help(name, tag)) from error
    if not path:
        raise BackboneError(_weights_help(name, tag))
    return Path(path), bool(cfg.get("quick_gelu", False))


# --- building ------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_library():
    """open_clip logs "initialized randomly" for a model whose weights are loaded right after, and some library
    versions warn of deprecations (FutureWarning) the user cannot act on; neither says anything about this run."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logging.disable(previous)


def _build(name: str, quick_gelu: bool, device: str = "cpu") -> torch.nn.Module:
    """An open_clip architecture with random weights and the given activation (the config's flag overridden)."""
    with _quiet_library(), torch.device(device):
        return open_clip.create_model(name, pretrained=None, quick_gelu=quick_gelu, device=device)


def load_weights(name: str, path: Path, *, activation: str = "auto", weights_quick_gelu: bool | None = None,
                 source: str = "file", tag: str | None = None) -> torch.nn.Module:
    """Build ``name`` with the activation its weights need and load ``path`` into it, checked key by key."""
    checkpoint = read_checkpoint(path)
    need = checkpoint.quick_gelu if checkpoint.quick_gelu is not None else weights_quick_gelu
    quick, why = choose_activation(name, need, activation)
    model = _build(name, quick)
    state_dict = _normalised(checkpoint.state_dict, model)
    check_fits(state_dict, model, path=path, name=name)
    model.load_state_dict(state_dict, strict=True)
    fmt = "open_clip-tag" if source == "tag" and checkpoint.format.startswith("open_clip") else checkpoint.format
    model.weights_info = WeightsInfo(source=source, format=fmt, activation=_activation_name(quick),
                                     activation_from=why, weights_activation=_activation_name(need),
                                     path=recorded_path(path), sha256=file_sha256(path), tag=tag)
    return model


def create_clip(name: str, pretrained: str | None = None, *, activation: str = "auto") -> torch.nn.Module:
    """Build the open_clip CLIP model ``name`` with weights from a tag, a file, a folder or none (module docstring).

    The model carries ``weights_info`` (:class:`WeightsInfo`)."""
    register_local_configs()
    if name.startswith("local-dir:"):
        return _local_dir_clip(name, activation=activation)
    if name not in open_clip.list_models():
        raise BackboneError(f"--backbone {name!r} is not an open_clip architecture; see open_clip.list_models()")
    if pretrained in NO_WEIGHTS:
        quick, why = choose_activation(name, None, activation)
        model = _build(name, quick)
        model.weights_info = WeightsInfo(source="none", format="random", activation=_activation_name(quick),
                                         activation_from=why, weights_activation=None)
        return model
    local = _local_path(pretrained)
    if local is not None and local.is_dir():
        checkpoint, quick, source = _folder_weights(local)
        return load_weights(name, checkpoint, activation=activation, weights_quick_gelu=quick, source=source)
    if local is not None:
        return load_weights(name, local, activation=activation)
    path, quick = _tag_weights(name, pretrained)
    return load_weights(name, path, activation=activation, weights_quick_gelu=quick, source="tag", tag=pretrained)


def _local_dir_clip(name: str, *, activation: str) -> torch.nn.Module:
    """``local-dir:PATH``: architecture and weights from the folder (open_clip's schema), the activation chosen like
    any other weights' (the folder's ``quick_gelu`` key, else the folder config's default GELU; or forced)."""
    checkpoint, quick, _ = _folder_weights(Path(name[len("local-dir:"):]))
    use_quick, why = choose_activation(name, quick, activation)
    with _quiet_library():
        model = open_clip.create_model(name, quick_gelu=use_quick)
    model.weights_info = WeightsInfo(source="local-dir", format="open_clip-local-dir",
                                     activation=_activation_name(use_quick), activation_from=why,
                                     weights_activation=_activation_name(quick), path=recorded_path(checkpoint),
                                     sha256=file_sha256(checkpoint))
    return model


def check_weights(name: str, pretrained: str | None, *, activation: str = "auto") -> None:
    """Fail now, in one line, if ``create_clip(name, pretrained)`` would: unknown architecture or tag, weights not
    available offline, an unreadable file, keys or shapes that do not fit. The architecture is built on the meta
    device (no memory, no initialisation), so this costs about one read of the file."""
    register_local_configs()
    if name.startswith("local-dir:"):
        _folder_weights(Path(name[len("local-dir:"):]))
        return
    if name not in open_clip.list_models():
        raise BackboneError(f"--backbone {name!r} is not an open_clip architecture; see open_clip.list_models()")
    choose_activation(name, None, activation)
    if pretrained in NO_WEIGHTS:
        return
    local = _local_path(pretrained)
    if local is not None and local.is_dir():
        path = _folder_weights(local)[0]
    else:
        path = local if local is not None else _tag_weights(name, pretrained)[0]
    model = _build(name, False, device="meta")
    check_fits(_normalised(read_checkpoint(path).state_dict, model), model, path=path, name=name)


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
