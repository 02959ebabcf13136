"""Helpers shared by the strategies that put layers into the CLIP visual tower (``lora``, ``adapter``, ``peft``).

Target resolution: strategies name block-level module suffixes (``"attn"``, ``"c_fc"``, ``"mlp.c_proj"``) and these
are resolved to explicit module names inside ``model.backbone``, block by block from ``model.backbone_blocks``, so
peft never matches a module outside the residual blocks by accident.

The bypass guard: ``nn.MultiheadAttention`` reads ``out_proj.weight`` directly (``F.multi_head_attention_forward``),
it never calls ``out_proj.forward``. An adapter placed on ``attn.out_proj`` of a stock open_clip block is therefore
silently skipped: no error, and its gradients stay None. ``refuse_bypassed`` rejects every target that lives inside
a ``nn.MultiheadAttention``; LoRA adapts the attention by targeting ``attn`` as a whole.

Rescaling q / k / v apart: the same fused ``in_proj_weight`` (3D x D) computes queries, keys and values, so no module
exists whose output is "the keys". ``scaled_in_projection`` folds a per-output-channel affine map into that weight
instead, s * (W x + b) + t = (diag(s) W) x + (s * b + t), exact, and ``call_with`` runs the attention with those
tensors substituted (``torch.func.functional_call``), the registered weights untouched. SSF (its qkv scale and shift)
and (IA)3 (l_k, l_v) use it.

LoRA on ``nn.MultiheadAttention``: peft's layer (``peft.tuners.lora.layer.MultiheadAttention``) merges the LoRA
deltas into the weights before every forward and unmerges them after. In peft 0.21 that path (a) adds the out_proj
delta twice in the forward (W + 2 dW; peft pull request #3774), (b) replaces the frozen ``in_proj_weight`` and
``out_proj.weight`` by new ``nn.Parameter`` objects holding (W + dW) - dW after every forward, every
``named_modules()`` and every ``state_dict()``: the "frozen" weights drift by rounding and the bench, which counts
added parameters by identity, would count them as added. ``MergeFreeLoraMHA`` keeps peft's LoRA layer (its
parameters, initialisation, scaling and delta) and only replaces that forward: it calls the base attention with
W + dW substituted for both weights (``torch.func.functional_call``), so the registered weights are never touched.
"""
from __future__ import annotations

from typing import Iterable

import torch
from peft import LoraConfig
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.lora.layer import MultiheadAttention as PeftLoraMHA
from peft.tuners.tuners_utils import BaseTuner
from torch import nn
from torch.func import functional_call

from strategies.registry import StrategyError

ADAPTER_NAME = "default"


def block_names(model) -> list[str]:
    """Names of the residual blocks inside ``model.backbone``, e.g. ``transformer.resblocks.3``."""
    names = {id(module): name for name, module in model.backbone.named_modules()}
    return [names[id(block)] for block in model.backbone_blocks]


def resolve_targets(model, suffixes: Iterable[str], *, field: str, layers: Iterable[int] | None = None) -> list[str]:
    """Block-level suffixes -> explicit module names inside ``model.backbone``, for the chosen blocks (None = all).

    A suffix matches a block's submodule whose name relative to the block equals it or ends with ``.suffix``.
    """
    prefixes = block_names(model)
    chosen = range(len(prefixes)) if layers is None else list(layers)
    resolved = []
    for suffix in suffixes:
        for index in chosen:
            matches = [name for name, _ in model.backbone_blocks[index].named_modules()
                       if name == suffix or name.endswith("." + suffix)]
            if not matches:
                raise StrategyError(f"{field}: {suffix!r} matches no submodule of visual block {index}")
            resolved += [f"{prefixes[index]}.{name}" for name in matches]
    refuse_bypassed(model.backbone, resolved, field=field)
    return resolved


def refuse_bypassed(backbone: nn.Module, names: Iterable[str], *, field: str) -> None:
    """Reject targets nested in an ``nn.MultiheadAttention`` (e.g. ``attn.out_proj``): its forward never calls them."""
    for name in names:
        parts = name.split(".")
        ancestors = (backbone.get_submodule(".".join(parts[:depth])) for depth in range(1, len(parts)))
        if any(isinstance(module, nn.MultiheadAttention) for module in ancestors):
            raise StrategyError(f"{field}: {name!r} sits inside nn.MultiheadAttention, whose forward never calls it "
                                f"(an adapter there is silently bypassed); target the whole 'attn' with LoRA instead")


def scaled_in_projection(attention: nn.MultiheadAttention, scale: torch.Tensor, shift: torch.Tensor | None = None
                         ) -> dict[str, torch.Tensor]:
    """The fused q/k/v projection followed by ``y * scale + shift`` per output channel (scale, shift: (3D,)), as
    ``functional_call`` overrides of ``in_proj_weight`` / ``in_proj_bias``; the module docstring says why."""
    if not attention._qkv_same_embed_dim or attention.in_proj_bias is None:
        raise StrategyError("the visual attention has no fused q/k/v projection with a bias (open_clip's blocks do)")
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    scale = scale.to(weight.dtype)
    bias = bias * scale + (0 if shift is None else shift.to(bias.dtype))  # (3D,)
    return {"in_proj_weight": weight * scale[:, None], "in_proj_bias": bias}  # (3D, D), (3D,)


def call_with(module: nn.Module, overrides: dict[str, torch.Tensor], args: tuple, kwargs: dict):
    """``module(*args, **kwargs)`` with some of its tensors replaced for this call only (its hooks still run)."""
    return functional_call(module, overrides, args, kwargs)


def inject_peft(backbone: nn.Module, config, *, field: str) -> BaseTuner:
    """Inject a peft tuner's layers into ``backbone`` in place and return the tuner.

    Same as ``peft.inject_adapter_in_model`` (which builds the tuner and returns ``tuner.model``), but the tuner is
    returned: tuners with shared state (VeRA) keep it there and AdaLoRA's ``update_and_allocate`` is a tuner method.
    peft's errors (e.g. a tuner that cannot adapt a layer type) become one-line ``StrategyError`` messages.
    """
    if config.is_prompt_learning or config.peft_type not in PEFT_TYPE_TO_TUNER_MAPPING:
        raise StrategyError(f"{field}: peft type {config.peft_type.value} does not inject layers into a model")
    if type(config) is LoraConfig:
        config._register_custom_module({nn.MultiheadAttention: MergeFreeLoraMHA})
    tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]
    try:
        return tuner_cls(backbone, config, adapter_name=ADAPTER_NAME)
    except Exception as error:  # peft raises ValueError, TypeError, NotImplementedError ... for unsupported layers
        message = f"{field}: peft {config.peft_type.value} cannot adapt these modules: {first_line(error)}"
        raise StrategyError(message) from error


def first_line(error: BaseException) -> str:
    """peft's messages span lines; the bench wants one."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_only_added_train(backbone: nn.Module, before_ids: set[int], *, prefixes: tuple[str, ...], field: str
                           ) -> None:
    """After injection exactly the added parameters may train, and each carries one of ``prefixes`` in its name."""
    for name, param in backbone.named_parameters():
        added = id(param) not in before_ids
        if param.requires_grad and not added:
            raise StrategyError(f"{field}: the tuner made the backbone's own parameter {name!r} trainable "
                                f"(e.g. bias='all'); only added parameters may train here")
        if added and param.requires_grad and not any(part.startswith(prefixes) for part in name.split(".")):
            raise StrategyError(f"{field}: added parameter {name!r} lacks the expected prefixes {prefixes}")


class MergeFreeLoraMHA(PeftLoraMHA):
    """peft's LoRA layer for ``nn.MultiheadAttention`` with a forward that substitutes W + dW instead of merging.

    Hu et al. (LoRA, ICLR 2022): W' = W + (alpha / r) B A for the packed q/k/v projection (``in_proj_weight``) and
    the output projection. Parameters, init (B = 0) and ``get_delta_weight`` are peft's; see the module docstring
    for why the forward is replaced. ``merge``/``unmerge`` are inherited unchanged and are not used by the bench.
    """

    def forward(self, query: torch.Tensor, *args, **kwargs):
        self._check_forward_args(query, *args, **kwargs)
        if self.disable_adapters or self.merged:
            return super().forward(query, *args, **kwargs)
        attention = self.get_base_layer()
        out_lora = attention.out_proj  # peft's LoRA Linear around the output projection
        active = [name for name in self.active_adapters if name in self.lora_A]
        in_weight = attention.in_proj_weight + sum(self.get_delta_weight(name) for name in active)
        out_weight = out_lora.get_base_layer().weight + sum(out_lora.get_delta_weight(name) for name in active)
        overrides = {"in_proj_weight": in_weight, "out_proj.base_layer.weight": out_weight}
        return functional_call(attention, overrides, (query, *args), kwargs)

    def _restore_weights(self) -> None:
        """peft re-registers the weights after its merge; this forward never unregisters them, so keep them as is."""
        attention = self.get_base_layer()
        weights = (attention.in_proj_weight, attention.out_proj.get_base_layer().weight)
        if not all(isinstance(weight, nn.Parameter) for weight in weights):
            super()._restore_weights()


def enable_added(backbone: nn.Module, prefix: str) -> None:
    """Let the parameters a strategy added to the visual tower (named ``<prefix>...``) train, and nothing else."""
    for name, parameter in backbone.named_parameters():
        if f".{prefix}" in f".{name}":
            parameter.requires_grad_(True)
