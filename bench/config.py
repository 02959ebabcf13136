"""Run configuration: validated, frozen dataclasses fed from JSON (experiments/) and command-line overrides.

A run is fully described by one ``RunConfig``; its JSON form is stored in every result file, so a result says how
it was produced. Unknown keys are rejected with the full dotted path, so a typo in an experiment file cannot
silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
DATASETS = ("synthetic", "mars", "duke")
ACTIVATIONS = ("auto", "quick_gelu", "gelu")  # models/backbone.py chooses; kept here so config needs no torch
FRAME_FITS = ("pad", "stretch")  # data/transforms.py
AUGMENTS = ("none", "frame", "clip")


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the field."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"
    data_root: str | None = None
    frames: int = 6
    num_train: int = 1024   # synthetic only: tracklets per split
    num_val: int = 256
    num_test: int = 512
    tracklet_length: int = 16
    data_seed: int = 0      # which synthetic people exist; independent of the training seed
    num_workers: int = 0
    frame_fit: str = "pad"  # real frames to the square input: aspect kept + zero padding (VTF 2.1), or "stretch"
    augment: str = "none"   # training only: "frame" = released Pad + RandomCrop + flip per frame, "clip" = per clip
    augment_pad: int = 10   # the padding of that augmentation, in input pixels (released: 10 at 224 px)

    def __post_init__(self):
        _require(self.dataset in DATASETS, f"data.dataset: expected one of {DATASETS}, got {self.dataset!r}")
        _require(self.dataset == "synthetic" or bool(self.data_root),
                 f"data.data_root: required for dataset {self.dataset!r} (--data-root DIR)")
        _require(self.frames >= 1, f"data.frames: expected >= 1, got {self.frames}")
        for name in ("num_train", "num_val", "num_test", "tracklet_length"):
            _require(getattr(self, name) >= 1, f"data.{name}: expected >= 1, got {getattr(self, name)}")
        _require(self.frame_fit in FRAME_FITS, f"data.frame_fit: expected one of {FRAME_FITS}, got {self.frame_fit!r}")
        _require(self.augment in AUGMENTS, f"data.augment: expected one of {AUGMENTS}, got {self.augment!r}")
        _require(self.augment_pad >= 0, f"data.augment_pad: expected >= 0, got {self.augment_pad}")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "par-vit-tiny"
    pretrained: str | None = None
    temporal: str = "mean"
    activation: str = "auto"   # auto: what the weights were trained with (OpenAI: QuickGELU), else the architecture's
    fusion_width: int = 128
    fusion_heads: int = 4
    fusion_mlp_ratio: float = 4.0

    def __post_init__(self):
        _require(self.temporal in ("mean", "tmd"), f"model.temporal: expected 'mean' or 'tmd', got {self.temporal!r}")
        _require(self.activation in ACTIVATIONS,
                 f"model.activation: expected one of {ACTIVATIONS}, got {self.activation!r}")
        _require(self.fusion_width % self.fusion_heads == 0,
                 f"model.fusion_width ({self.fusion_width}) must be divisible by fusion_heads ({self.fusion_heads})")


PRECISIONS = ("fp32", "bf16", "fp16")  # autocast dtype of a run; see bench/precision.py
SDPA_POLICIES = ("auto", "math", "flash", "efficient", "cudnn")  # auto = PyTorch chooses the attention kernel


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_size: int = 16
    lr: float = 1e-3
    backbone_lr_scale: float = 1.0   # lr multiplier for parameters that came with the pretrained backbone
    weight_decay: float = 0.0
    warmup_epochs: float = 1.0
    threshold: float = 0.45
    seed: int = 0
    device: str = "auto"
    train_head: bool = True          # the shared fusion + head train under every strategy (one flag, not per strategy)
    select_metric: str = "macro_f1"  # val metric that chooses the checkpoint
    head_prior_init: bool = True     # start the head's output offset at the loss-optimal constant (models/loss.py)
    max_steps_per_epoch: int | None = None
    world_size: int = 1              # DDP processes of one run (torchrun); batch_size is the global batch over them
    precision: str = "fp32"              # fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler)
    half_frozen_backbone: bool = False   # frozen backbone weights held in the autocast dtype (VTFPAR++ holds fp16)
    sdpa_backend: str = "auto"           # attention kernel policy for training and evaluation
    tf32: bool = False                   # TF32 matmuls on CUDA (Ampere+); fp32 stays exact fp32 by default
    compile: bool = False                # torch.compile the model

    def __post_init__(self):
        _require(self.precision in PRECISIONS,
                 f"train.precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _require(not self.half_frozen_backbone or self.precision != "fp32",
                 "train.half_frozen_backbone: needs train.precision bf16 or fp16 (the dtype frozen weights are held "
                 "in), got fp32")
        _require(self.sdpa_backend in SDPA_POLICIES,
                 f"train.sdpa_backend: expected one of {', '.join(SDPA_POLICIES)}, got {self.sdpa_backend!r}")
        _require(self.epochs >= 1, f"train.epochs: expected >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"train.batch_size: expected >= 1, got {self.batch_size}")
        _require(self.lr > 0, f"train.lr: expected > 0, got {self.lr}")
        _require(0.0 < self.threshold < 1.0, f"train.threshold: expected in (0, 1), got {self.threshold}")
        _require(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
                 f"train.device: expected auto, cpu or cuda[:N], got {self.device!r}")
        _require(self.world_size >= 1 and self.batch_size % self.world_size == 0,
                 f"train.world_size: expected >= 1 and dividing batch_size {self.batch_size}, got {self.world_size}")


@dataclass(frozen=True)
class ProfileConfig:
    enabled: bool = True
    only: bool = False            # profile-only mode: a few measured steps, no training to convergence
    warmup_steps: int = 2
    measured_steps: int = 5
    flops: bool = True
    memory: bool = True

    def __post_init__(self):
        _require(self.warmup_steps >= 0 and self.measured_steps >= 1,
                 "profile: warmup_steps must be >= 0 and measured_steps >= 1")


@dataclass(frozen=True)
class StrategyConfig:
    name: str = "frozen"     # the run's label, e.g. a variant name such as 'side_spatial'
    family: str = ""         # the registered strategy it uses; empty = same as name
    params: dict = field(default_factory=dict)

    @property
    def registered(self) -> str:
        return self.family or self.name


@dataclass(frozen=True)
class RunConfig:
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of the whole config: a finished result is reused only if its config is identical."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        return _build(cls, data, "")


def _check_type(value: Any, annotation: Any, path: str) -> Any:
    """Check a JSON value against a (simple) dataclass field annotation; ints are accepted for floats."""
    origin = typing.get_origin(annotation)
    options = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    for option in options:
        if option is type(None) and value is None:
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool, dict) and isinstance(value, option):
            return value
    raise ConfigError(f"{path}: expected {annotation}, got {value!r}")


def _build(cls: type, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{prefix or 'config'}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        kwargs[name] = _build(hint, value, path) if dataclasses.is_dataclass(hint) else _check_type(value, hint, path)
    return cls(**kwargs)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge two config dicts (override wins); ``strategy.params`` is replaced, not merged."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON ({error.msg} at line {error.lineno})") from None
