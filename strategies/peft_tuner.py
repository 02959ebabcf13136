"""Any peft tuner, by name and keyword arguments, on the MLP linears (``c_fc``, ``c_proj``) of the CLIP visual tower.

One family for the peft methods that inject layers (Mangrulkar et al., peft): LoHa (Hyeon-Woo et al., ICLR 2022;
the default), LoKr (Yeh et al., ICLR 2024), (IA)3 (Liu et al., NeurIPS 2022), OFT (Qiu et al., NeurIPS 2023), BOFT,
VeRA, AdaLoRA, FourierFT, HRA, ... ``tuner`` is a ``peft.PeftType`` name (case-insensitive), ``kwargs`` go to that
tuner's own config class (``peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING``) and are validated by it when the strategy
config is built; ``targets`` are block-level module suffixes resolved to explicit names in every visual block.

Rules and choices:
- Prompt-learning types (prompt/prefix/p-tuning) and adaption prompts inject no layers: rejected. Non-LoRA tuners
  cannot adapt ``nn.MultiheadAttention`` (``attn``): peft's error is passed on as one line. ``attn.out_proj`` is
  refused for every tuner (it is silently bypassed, see ``strategies.common``).
- (IA)3 needs ``feedforward_modules``, the layers whose *input* is scaled. Liu et al. scale the FFN's intermediate
  activation (l_ff), i.e. the input of the second linear: by default the targets ending in ``c_proj`` are
  feedforward; ``c_fc`` then gets its output scaled (a 4D-vector on the pre-GELU activation). Given suffixes are
  resolved like ``targets``.
- AdaLoRA reallocates ranks during training: ``total_step`` (the run's optimizer steps) must be in ``kwargs``, and
  ``update_and_allocate(step)`` is registered in ``model.step_hooks`` (called after each optimizer step, before the
  gradients are cleared). AdaLoRA's orthogonality regulariser is added to the loss by ``peft.PeftModel`` only, so
  it is not used here; its frozen per-layer ``ranknum`` parameter is counted as added.
- Prefixes: every injectable tuner's own parameter prefix (``hada_``, ``lokr_``, ``ia3_``, ``oft_``, ``lora_``,
  ``vera_lambda_``, ...) is registered; the bench counts added parameters by identity anyway.
- Zero-init: peft's default init makes LoHa, LoKr, (IA)3 and OFT exact no-ops at step 0 (one LoHa/LoKr factor is
  zero, (IA)3 vectors are one, OFT starts at the identity rotation; the contract tests check the default and each
  shipped variant, peft 0.21). Not every tuner is: FourierFT starts from a random spectrum, and kwargs such as
  ``init_weights=False`` break it for the others; ``zero_init`` describes the default and the shipped variants.
- OFT: peft silently shrinks an ``oft_block_size`` that does not divide a layer's input width; here that is an
  error. Block size 32 (``experiments/strategies/peft_oft.json``) divides the MLP input widths of par-vit-micro
  (64 / 256), par-vit-tiny (128 / 512) and ViT-B/16 (768 / 3072).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from peft import PromptLearningConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import PeftType

from strategies.common import check_only_added_train, first_line, inject_peft, resolve_targets
from strategies.options import option
from strategies.registry import NEW_PARAMETERS, StrategyError, StrategyOptions, register

RESERVED_KWARGS = {"target_modules": "set the strategy's 'targets' instead", "peft_type": "set 'tuner' instead",
                   "task_type": "the visual tower has no task type"}


def _injectable(peft_type: PeftType) -> bool:
    config_cls, tuner_cls = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type), PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type)
    return (config_cls is not None and isinstance(tuner_cls, type) and issubclass(tuner_cls, BaseTuner)
            and not issubclass(config_cls, PromptLearningConfig))


UNUSABLE = {PeftType.XLORA, PeftType.SHADOW}  # XLoRA needs a transformers model; peft refuses to inject SHADOW
INJECTABLE = {t.value.lower(): t for t in PeftType if _injectable(t) and t not in UNUSABLE}
PREFIXES = tuple(sorted({PEFT_TYPE_TO_PREFIX_MAPPING[t] for t in INJECTABLE.values()}))


def _tuner_problem(tuner: str) -> str | None:
    if tuner.lower() in INJECTABLE:
        return None
    if tuner.upper() in PeftType.__members__:
        return (f"peft's {tuner!r} injects no layers into a model (prompt learning or a model-level method); choose "
                f"one of {', '.join(sorted(INJECTABLE))}")
    return f"unknown peft tuner {tuner!r}; choose one of {', '.join(sorted(INJECTABLE))}"


def _targets_problem(targets: tuple[str, ...]) -> str | None:
    if targets and all(targets):
        return None
    return f"expected a non-empty list of module suffixes, got {targets!r}"


@dataclass(frozen=True)
class PeftConfig(StrategyOptions):
    tuner: str = option("loha", "a peft.PeftType name (case-insensitive) whose tuner injects layers",
                        check=_tuner_problem)
    kwargs: dict = option(help="keyword arguments of that tuner's peft config class (checked by peft)", factory=dict)
    targets: tuple[str, ...] = option(("c_fc", "c_proj"), "block-level module suffixes (default: the MLP linears)",
                                      check=_targets_problem)

    def check_fields(self) -> None:
        """The kwargs against the tuner's peft config class, then peft's own validation of the whole config."""
        _check_kwargs(self.peft_type, self.kwargs)
        peft_config(self, targets=list(self.targets), feedforward=_feedforward_suffixes(self))

    @property
    def peft_type(self) -> PeftType:
        return INJECTABLE[self.tuner.lower()]


def _check_kwargs(peft_type: PeftType, kwargs: dict) -> None:
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    known = {f.name for f in dataclasses.fields(config_cls) if f.init}
    for key in kwargs:
        if key in RESERVED_KWARGS:
            raise StrategyError(f"kwargs.{key}: not allowed ({RESERVED_KWARGS[key]})")
        if key not in known:
            raise StrategyError(f"kwargs.{key}: not a parameter of peft's {config_cls.__name__}")
    if peft_type is PeftType.ADALORA and "total_step" not in kwargs:
        raise StrategyError("kwargs.total_step: AdaLoRA needs the run's number of optimizer steps (epochs x steps per "
                            "epoch) to schedule its rank budget")


def _feedforward_suffixes(cfg: PeftConfig) -> list[str] | None:
    """(IA)3's feedforward layers: given in kwargs, else the targets ending in c_proj (the FFN's second linear)."""
    if cfg.peft_type is not PeftType.IA3:
        return None
    given = cfg.kwargs.get("feedforward_modules")
    if given is not None:
        return [given] if isinstance(given, str) else list(given)
    return [t for t in cfg.targets if t.split(".")[-1] == "c_proj"]


def peft_config(cfg: PeftConfig, *, targets: list[str], feedforward: list[str] | None):
    """The tuner's peft config for explicit ``targets``; peft's own validation errors become one line."""
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[cfg.peft_type]
    kwargs = {**cfg.kwargs, "target_modules": targets}
    if feedforward is not None:
        kwargs["feedforward_modules"] = feedforward
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError, ImportError) as error:
        raise StrategyError(f"kwargs: peft's {config_cls.__name__} rejected them: {first_line(error)}") from error


def apply(model, cfg: PeftConfig):
    """Inject the tuner into the chosen modules of every visual block; only its added parameters train."""
    names = resolve_targets(model, cfg.targets, field="peft.targets")
    suffixes = _feedforward_suffixes(cfg)
    feedforward = suffixes and resolve_targets(model, suffixes, field="peft.kwargs.feedforward_modules")  # None/[]
    if cfg.peft_type is PeftType.OFT:
        _check_oft_blocks(model.backbone, names, cfg.kwargs)
    before = {id(p) for p in model.backbone.parameters()}
    tuner = inject_peft(model.backbone, peft_config(cfg, targets=names, feedforward=feedforward), field="peft")
    check_only_added_train(model.backbone, before, prefixes=(tuner.prefix,), field="peft")
    if hasattr(tuner, "update_and_allocate"):  # AdaLoRA: rank reallocation after every optimizer step
        model.step_hooks.append(tuner.update_and_allocate)
    return model


def _check_oft_blocks(backbone, names: list[str], kwargs: dict) -> None:
    """peft silently changes an OFT block size that does not divide a layer's input width; refuse that instead."""
    defaults = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.OFT]()
    blocks, size = kwargs.get("r", defaults.r), kwargs.get("oft_block_size", defaults.oft_block_size)
    for name in names:
        width = backbone.get_submodule(name).in_features
        if (blocks and width % blocks) or (not blocks and width % size):
            given = f"r={blocks} blocks" if blocks else f"oft_block_size={size}"
            raise StrategyError(f"peft.kwargs: OFT {given} does not divide the input width {width} of {name!r}")


register("peft", config=PeftConfig, apply=apply, hyper=NEW_PARAMETERS, prefixes=PREFIXES, zero_init=True,
         description="any peft tuner by name + kwargs (default LoHa) on the visual tower's MLP linears")
