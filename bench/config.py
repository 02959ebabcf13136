"""Run configuration: validated, frozen dataclasses fed from JSON (experiments/) and command-line overrides.

A run is fully described by one ``RunConfig``; its JSON form is stored in every result file, so a result says how
it was produced. Unknown keys are rejected with the full dotted path, so a typo in an experiment file cannot
silently fall back to a default.

Every field is declared with ``option(default, help, **rules)``: its constraints live in the field's metadata and
one generic pass (``strategies.options.validate_fields``, run by every section's ``__post_init__``) checks the type
and every rule of every field, so a field added later is checked as soon as it is declared. Rules that involve
several fields are a section's ``check_fields``. That builder lives in ``strategies/options.py`` because every
strategy's config is declared and checked by the same one: one validation path for every config.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench.errors import BenchError
from bench.measure.metrics import SCALAR_METRICS
from strategies import options
from strategies.options import option

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
DATASETS = ("synthetic", "mars", "duke")
ACTIVATIONS = ("auto", "quick_gelu", "gelu")  # models/backbone.py chooses; kept here so config needs no torch
FRAME_FITS = ("pad", "stretch")  # data/transforms.py
FRAME_ABLATIONS = ("none", "shuffle", "one")  # data/ablation.py
PROTOCOLS = ("val", "full-train", "test-select", "val-only")  # bench/training/datasets.py: protocol_splits, arrange

AUGMENTS = ("none", "frame", "clip")
PRECISIONS = ("fp32", "bf16", "fp16")  # autocast dtype of a run; see bench/numerics.py
SDPA_POLICIES = ("auto", "math", "flash", "efficient", "cudnn")  # auto = PyTorch chooses the attention kernel


class ConfigError(BenchError, options.OptionError):
    """A configuration value or file is invalid; the message names the field."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


class Validated(options.Validated):
    """Base of every config section (``strategies.options.Validated``): a bad value is a ``ConfigError`` naming the
    section and field."""

    ERROR: ClassVar[type[ConfigError]] = ConfigError


def _known_backbone(name: str) -> str | None:
    """open_clip architectures: its packaged configs plus ours (models/configs), read as file names: open_clip's
    own ``list_models()`` would import it (seconds) in a process that may never build a model."""
    if name.startswith("local-dir:"):
        return None
    spec = importlib.util.find_spec("open_clip")
    folders = [Path(p) / "model_configs" for p in (spec.submodule_search_locations or [])] if spec else []
    folders.append(Path(__file__).resolve().parent.parent / "models" / "configs")
    known = sorted({p.stem for folder in folders for p in folder.glob("*.json")})
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, n=3)
    return f"unknown open_clip architecture {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")


def _fusion_init_problem(value: str | None) -> str | None:
    if value is None or Path(value).expanduser().is_file():
        return None
    return f"expected an existing ViT state-dict file, got {value!r}"


def _device_problem(value: str) -> str | None:
    kind, _, index = value.partition(":")
    if value != "auto" and (kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit()))):
        return f"expected auto, cpu, cuda or cuda:N, got {value!r}"
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= count:
            return f"{value!r} asked for, but this machine has {count} CUDA device(s) (use cpu or auto)"
    return None


@dataclass(frozen=True)
class DataConfig(Validated):
    SECTION: ClassVar[str] = "data"

    dataset: str = option("synthetic", "synthetic (generated, no files) or a real dataset", choices=DATASETS)
    data_root: str | None = option(None, "prepared root or re-encoded layout of a real dataset; none for synthetic")
    frames: int = option(6, "frames per clip", min=1)
    num_train: int = option(1024, "synthetic only: tracklets in the train split", min=1)
    num_val: int = option(256, "synthetic only: tracklets in the val split", min=1)
    num_test: int = option(512, "synthetic only: tracklets in the test split", min=1)
    tracklet_length: int = option(16, "synthetic only: frames per tracklet", min=1)
    data_seed: int = option(0, "which synthetic people exist; independent of the training seed", min=0,
                            max=2**32 - 1)
    num_workers: int = option(0, "DataLoader worker processes (0 = load in the training process)", min=0)
    frame_fit: str = option("pad", "real frames to the square input: aspect kept + zero padding (VTF section 2.1), "
                                   "or stretch", choices=FRAME_FITS)
    augment: str = option("none", "training augmentation: frame = released Pad + RandomCrop + flip drawn per frame, "
                                  "clip = drawn once per clip, none", choices=AUGMENTS)
    augment_pad: int = option(10, "padding of that augmentation in input pixels (released: 10 at 224 px)", min=0)
    frame_ablation: str = option("none", "sensitivity ablation of every split's clips: shuffle = frames in a random "
                                         "order, one = the first sampled frame repeated (no temporal information, "
                                         "same model and cost); none = as sampled", choices=FRAME_ABLATIONS)

    def check_fields(self) -> None:
        if self.dataset == "synthetic":
            _require(self.data_root is None, f"data.data_root: {self.data_root!r} given, but data.dataset "
                     "'synthetic' reads no files; pass --dataset mars or duke with it, or drop --data-root")
            return
        _require(bool(self.data_root), f"data.data_root: required for dataset {self.dataset!r} (--data-root DIR)")
        _require(Path(self.data_root).is_dir(), f"data.data_root: {self.data_root!r} is not an existing folder "
                 f"(expected a prepared {self.dataset} root: python -m data.prepare {self.dataset} ...)")


@dataclass(frozen=True)
class ModelConfig(Validated):
    SECTION: ClassVar[str] = "model"

    backbone: str = option("par-vit-tiny", "open_clip architecture (or local-dir:PATH)", check=_known_backbone)
    pretrained: str | None = option(None, "open_clip tag, a local checkpoint file, or none (checked when loaded)")
    temporal: str = option("mean", "temporal aggregator of the visual path", choices=("mean", "tmd"))
    activation: str = option("auto", "MLP activation: auto = what the weights were trained with (OpenAI: QuickGELU), "
                                     "else the architecture's; or force quick_gelu / gelu", choices=ACTIVATIONS)
    fusion_width: int = option(128, "width of the fusion transformer", min=1)
    fusion_heads: int = option(4, "attention heads of the fusion transformer", min=1)
    fusion_mlp_ratio: float = option(4.0, "MLP width / fusion width", above=0)
    fusion_drop_path: float = option(0.0, "drop-path (stochastic depth) rate on the fusion block's two residual "
                                          "branches, training only (VTFPAR++: 0.1)", min=0, below=1)
    fusion_init: str | None = option(None, "a timm ViT state-dict file (.pth / .safetensors) whose last block and "
                                           "final norm start the fusion block: VTF's fusion (its released code uses "
                                           "ImageNet ViT-B/16, jx_vit_base_p16_224; with fusion_width 768, "
                                           "fusion_heads 12; preset vtf); none = random (VTFPAR++)",
                                     check=_fusion_init_problem)
    visual_attention: bool = option(True, "false = sensitivity ablation: the attention branch of every visual block "
                                          "is computed and discarded (models/vision.py: discard_attention)")

    def check_fields(self) -> None:
        _require(self.fusion_width % self.fusion_heads == 0,
                 f"model.fusion_width ({self.fusion_width}) must be divisible by fusion_heads ({self.fusion_heads})")


@dataclass(frozen=True)
class TrainConfig(Validated):
    SECTION: ClassVar[str] = "train"

    epochs: int = option(6, "training epochs", min=1)
    batch_size: int = option(16, "clips per training step", min=1)
    lr: float = option(1e-3, "Adam learning rate", above=0)
    backbone_lr_scale: float = option(1.0, "lr multiplier for parameters that came with the pretrained backbone",
                                      min=0)
    weight_decay: float = option(0.0, "Adam weight decay", min=0)
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs (fractions allowed)", min=0)
    lr_schedule: str | None = option(None, "null = this project's: linear warm-up per step, then cosine to 0 over "
                                           "the remaining steps; released = the released VTF / VTFPAR++ code's: "
                                           "per epoch, warm-up from 0.01 lr, cosine from lr towards 0.002 lr over "
                                           "all epochs (timm CosineLRScheduler)",
                                     check=lambda v: None if v in (None, "released") else
                                     f"expected null or 'released', got {v!r}")
    threshold: float = option(0.45, "probability threshold of the paper protocol", above=0, below=1)
    seed: int = option(0, "training seed (initialisation, batch order, frame draws)", min=0, max=2**32 - 1)
    device: str = option("auto", "auto, cpu, cuda or cuda:N", check=_device_problem)
    train_head: bool = option(True, "the shared fusion + head train under every strategy (one flag, not per "
                                    "strategy)")
    select_metric: str = option("macro_f1", "val metric that chooses the checkpoint", choices=SCALAR_METRICS)
    protocol: str = option("val", "val = the checkpoint is chosen on the validation split (identities disjoint from "
                                  "train and test), the test split is scored once; full-train = the papers' "
                                  "protocol: train on train + validation, test the last epoch; test-select = the "
                                  "released code's practice, the test split chooses the checkpoint (optimistic: "
                                  "warned, never the default); val-only = validation only, the test split is never "
                                  "built (the runs of a --tune grid)", choices=PROTOCOLS)
    head_prior_init: bool = option(True, "start the head's output offset at the loss-optimal constant "
                                         "(models/loss.py)")
    max_steps_per_epoch: int | None = option(None, "cap on training steps per epoch; null = the whole split",
                                             min=1)
    world_size: int = option(1, "DDP processes of one run (torchrun); batch_size is the global batch over them",
                             min=1)
    precision: str = option("fp32", "fp32, bf16 or fp16 (autocast; fp16 with a gradient scaler)", choices=PRECISIONS)
    half_frozen_backbone: bool = option(False, "frozen backbone weights held in the autocast dtype (VTFPAR++ holds "
                                               "its frozen CLIP in fp16)")
    sdpa_backend: str = option("auto", "attention kernel policy for training and evaluation", choices=SDPA_POLICIES)
    tf32: bool = option(False, "TF32 matmuls on CUDA (Ampere+); off, so fp32 stays exact fp32")
    compile: bool = option(False, "torch.compile the model")

    def check_fields(self) -> None:
        _require(self.batch_size % self.world_size == 0,
                 f"train.world_size: expected a divisor of batch_size {self.batch_size}, got {self.world_size}")
        _require(not self.half_frozen_backbone or self.precision != "fp32",
                 "train.half_frozen_backbone: needs train.precision bf16 or fp16 (the dtype frozen weights are held "
                 "in), got fp32")


@dataclass(frozen=True)
class ProfileConfig(Validated):
    SECTION: ClassVar[str] = "profile"

    enabled: bool = option(True, "measure FLOPs and memory after training")
    only: bool = option(False, "profile-only mode: a few measured steps, no training to convergence")
    warmup_steps: int = option(2, "steps left out of the step-time median", min=0)
    measured_steps: int = option(5, "profile-only mode: steps measured after the warm-up", min=1)
    flops: bool = option(True, "count FLOPs (torch FlopCounterMode)")
    memory: bool = option(True, "measure peak memory")


@dataclass(frozen=True)
class StrategyConfig(Validated):
    SECTION: ClassVar[str] = "strategy"

    name: str = option("frozen", "the run's label, e.g. a variant name such as 'side_spatial'",
                       check=lambda v: None if v.strip() else "expected a non-empty name")
    family: str = option("", "the registered strategy it uses; empty = same as name (checked against the registry "
                             "when the run is expanded)")
    params: dict = option(help="the strategy's own parameters (checked by its config dataclass)", factory=dict)

    @property
    def registered(self) -> str:
        return self.family or self.name


@dataclass(frozen=True)
class RunConfig(Validated):
    strategy: StrategyConfig = option(help="what is tuned", factory=StrategyConfig)
    data: DataConfig = option(help="which clips", factory=DataConfig)
    model: ModelConfig = option(help="the PAR model before the strategy", factory=ModelConfig)
    train: TrainConfig = option(help="the one training loop", factory=TrainConfig)
    profile: ProfileConfig = option(help="what is measured", factory=ProfileConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of the whole config: a finished result is reused only if its config is identical."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        return build(cls, data)


def _strategy_defaults_problem(defaults: dict) -> str | None:
    """Every family under a preset's ``strategy_defaults`` is registered and its parameters build its config."""
    from strategies import registry

    for family, params in defaults.items():
        if family not in registry.names():
            return f"unknown strategy family {family!r}; registered: {', '.join(registry.names())}"
        if not isinstance(params, dict):
            return f"{family}: expected an object of parameters, got {params!r}"
        try:
            registry.build_config(family, params)
        except registry.StrategyError as error:
            return f"{family}: {error}"
    return None


@dataclass(frozen=True)
class PresetConfig(RunConfig):
    """A preset file (defaults.json merged with presets/NAME.json): a run config plus per-family strategy defaults."""

    strategy_defaults: dict = option(help="family -> parameters a preset scales to its backbone", factory=dict,
                                     check=_strategy_defaults_problem)


def build(cls: type, data: Any, prefix: str = ""):
    """A config dataclass from JSON data (``strategies.options.build``) raising ``ConfigError``."""
    return options.build(cls, data, prefix, error=ConfigError)


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
    """A JSON config file, which must hold one object."""
    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON ({error.msg} at line {error.lineno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: unreadable ({error})") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"{path}: expected a JSON object {{...}} at the top level, got {type(payload).__name__}")
    return payload


# ---- one field by its dotted path: the command line's --set and its field flags --------------------------------

# The run-config sections a setting may name (the strategy is chosen by --strategies, its parameters by a preset's
# strategy_defaults).
SETTABLE_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "profile": ProfileConfig}


def field_at(path: str) -> dataclasses.Field:
    """The declared field behind ``section.field``; an unknown one is a ``ConfigError`` with the closest names."""
    section, _, name = path.partition(".")
    if section not in SETTABLE_SECTIONS:
        raise ConfigError(f"{path}: unknown section {section!r}, expected one of {', '.join(SETTABLE_SECTIONS)} (the "
                          "strategy is chosen by --strategies, its parameters by a preset's strategy_defaults)")
    fields = {f.name: f for f in dataclasses.fields(SETTABLE_SECTIONS[section])}
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=3)
        hint = f" (did you mean {', '.join(f'{section}.{c}' for c in close)}?)" if close else ""
        raise ConfigError(f"{path}: {section} has no field {name!r}{hint}; python run_bench.py --list-fields lists "
                          "them")
    return fields[name]


def parse_setting(text: str) -> dict:
    """``train.lr=3e-4`` -> ``{"train": {"lr": 0.0003}}``: the path must name a declared field; the value is JSON
    where it parses (numbers, true / false, null, lists), else text. The value itself is checked when the config is
    built, as every value is."""
    path, equals, raw = text.partition("=")
    path = path.strip()
    if not equals or "." not in path:
        raise ConfigError(f"expected SECTION.FIELD=VALUE (e.g. train.lr=3e-4), got {text!r}")
    field_at(path)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # plain text: a path, a name
    section, _, name = path.partition(".")
    return {section: {name: value}}


def field_table() -> list[list[str]]:
    """One row per field a setting may name: dotted path, type, default (as the JSON ``--set`` takes), meaning."""
    return [[f"{section}.{doc.name}", doc.type, doc.default, doc.help + (f" ({doc.rules})" if doc.rules else "")]
            for section, cls in SETTABLE_SECTIONS.items() for doc in options.describe(cls)]
