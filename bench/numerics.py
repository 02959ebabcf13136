"""Numerics of a run and its training step: autocast precision, gradient scaling, a half-precision frozen backbone,
the kernel switches (TF32 matmuls, SDPA backend policy, ``torch.compile``), and ``TrainingStep``, the one optimizer
step the loop (bench/training/) takes and the profiler (bench/measure/) measures. A room of its own below both, so
the loop never reaches into "measure" for its step and the measurements never depend on the loop.

Conventions (PyTorch automatic mixed precision, ``torch.amp``): under ``bf16`` / ``fp16`` the forward runs inside
``torch.autocast`` (matmuls and convolutions in the low precision, reductions and losses in fp32); parameters, their
gradients and Adam's state stay fp32. ``fp16`` has a narrow exponent range, so its loss is scaled and the optimizer
step skipped on overflow (``torch.amp.GradScaler``); ``bf16`` has fp32's range and needs no scaler. VTFPAR++ (Wang
et al., 2024, Sec. 4.2 / released code) holds its frozen CLIP in fp16: ``half_frozen_backbone`` casts the backbone
parameters that no gradient reaches to the autocast dtype, except normalisation layers (as open_clip's
``convert_weights_to_lp``: CPU layer norm rejects a half weight with an fp32 input, and fp32 statistics are what the
mixed-precision recipes keep).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

if TYPE_CHECKING:  # reads the sections it is given and imports no config at run time (docs/architecture.md)
    from bench.config import TrainConfig

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# "auto" leaves PyTorch's own choice (flash / memory-efficient / cuDNN where the inputs allow, math otherwise).
SDPA_BACKENDS = {"auto": None, "math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


@dataclass
class Numerics:
    """How a step computes: autocast dtype (None = plain fp32), an fp16 gradient scaler, the SDPA policy."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    sdpa_backend: str = "auto"

    @contextlib.contextmanager
    def forward_context(self):
        """Autocast (when not fp32) and the SDPA backend policy around a forward pass."""
        with contextlib.ExitStack() as stack:
            if self.dtype is not None:
                stack.enter_context(torch.autocast(self.device_type, dtype=self.dtype))
            stack.enter_context(self.kernel_context())
            yield

    def kernel_context(self) -> contextlib.AbstractContextManager:
        """The SDPA backend policy alone. Backward runs under it too: a module recomputed there (activation
        checkpointing) must pick the attention kernel its forward picked, or it saves other tensors and
        ``torch.utils.checkpoint`` refuses the step (autocast it restores itself)."""
        backend = SDPA_BACKENDS[self.sdpa_backend]
        return sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward(); optimizer.step()``, through the gradient scaler under fp16."""
        self.backward(loss)
        self.optimizer_step(optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        """The backward pass under the kernel policy, of the scaled loss under fp16."""
        with self.kernel_context():
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; under fp16 through the scaler, which skips a step whose unscaled gradients hold
        inf / NaN and updates its scale."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()


FP32 = Numerics()  # plain fp32 on the CPU: for tools and tests that say so; no signature takes it by default


@dataclass(frozen=True)
class TrainingStep:
    """What one optimizer step needs besides its batch, carried as one required object: the module trained (the DDP
    wrapper under torchrun), its loss, its optimizer, the device and the numerics. The training loop calls it for
    every batch and the profiler measures this very call, so the measured step is the trained step; nothing can
    forget the numerics and silently run fp32."""

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    numerics: Numerics
    device: torch.device

    def __call__(self, video: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One optimizer step; the forward under the numerics, the loss in fp32. Returns the detached loss."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.numerics.forward_context():
            logits = self.model(video)
        loss = self.loss_fn(logits.float(), target)
        self.numerics.backward_and_step(loss, self.optimizer)
        return loss.detach()

    def on(self, model: nn.Module) -> TrainingStep:
        """The same step on ``model`` (e.g. the unwrapped module of a DDP run, which the profiler measures)."""
        return dataclasses.replace(self, model=model)



def numerics_for(cfg: TrainConfig, device: torch.device) -> Numerics:
    dtype = AUTOCAST_DTYPES[cfg.precision]
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    return Numerics(device_type=device.type, dtype=dtype, scaler=scaler, sdpa_backend=cfg.sdpa_backend)


def set_global_switches(cfg: TrainConfig, device: torch.device) -> None:
    """TF32 matmuls / convolutions on CUDA (Ampere and later); no effect on CPU. Set once per run process."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32


def half_frozen_parameters(module: nn.Module, dtype: torch.dtype) -> int:
    """Cast the frozen (requires_grad False) parameters of ``module`` to ``dtype``, norm layers excepted.

    Call after the strategy has chosen what trains. Returns the number of parameters cast. Parameters a strategy
    trains stay fp32, so the optimizer and its state never see a half tensor.
    """
    keep = {id(p) for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    cast = 0
    for param in module.parameters():
        if not param.requires_grad and id(param) not in keep and param.is_floating_point():
            param.data = param.data.to(dtype)
            cast += param.numel()
    return cast


MHA_INPUTS = ("query", "key", "value")


def relayout_attention_inputs(model: nn.Module, numerics: Numerics) -> int:
    """On CPU under bf16 / fp16, hand every batch-first ``nn.MultiheadAttention`` its inputs stored sequence-major.

    Why: a batch-first attention transposes its (N, L, E) input to a non-contiguous (L, N, E) view before the input
    projection; ``torch.matmul`` then takes its batched path and, on CPU in bf16 / fp16, ``bmm`` materialises the
    broadcast weight once per sequence position (PyTorch issue #151934): at ViT-B/16 one (197, 768, 2304) copy,
    665 MiB and about 20x the projection's time, per attention call. Storing the input sequence-major makes that
    view contiguous, so the projection is one plain matrix multiply. Values, shapes and FLOPs are unchanged; fp32 and
    GPU runs are left as they are (their kernels take strided inputs). Returns the number of attention modules
    re-laid out (recorded)."""
    if numerics.dtype is None or numerics.device_type != "cpu":
        return 0
    attentions = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention) and m.batch_first]
    for attention in attentions:
        attention.register_forward_pre_hook(_sequence_major_inputs, with_kwargs=True)
    return len(attentions)


def _sequence_major_inputs(module: nn.Module, args: tuple, kwargs: dict):
    """(N, L, E) -> the same values in (L, N, E) storage; one copy per distinct tensor, so self-attention's
    ``query is key is value`` (the packed projection) still holds."""
    copies: dict[int, torch.Tensor] = {}

    def relayout(x):
        if isinstance(x, torch.Tensor) and x.dim() == 3 and id(x) not in copies:
            copies[id(x)] = x.transpose(0, 1).contiguous().transpose(0, 1)  # (N, L, E) values, (L, N, E) storage
        return copies.get(id(x), x)

    args = tuple(relayout(a) if i < len(MHA_INPUTS) else a for i, a in enumerate(args))
    return args, {k: relayout(v) if k in MHA_INPUTS else v for k, v in kwargs.items()}


def maybe_compile(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """``torch.compile`` the model in place (``nn.Module.compile``: names, hooks and state_dict keys unchanged)."""
    if cfg.compile:
        model.compile()
    return model


def setting_record(cfg: TrainConfig, device: torch.device, *, half_cast_params: int, relaid_attentions: int = 0
                   ) -> dict:
    """What the result record states about numerics and kernels (``profile`` section)."""
    return {"attention_inputs_relaid": relaid_attentions,
            "precision": cfg.precision, "autocast_dtype": str(AUTOCAST_DTYPES[cfg.precision] or "none"),
            "grad_scaler": cfg.precision == "fp16", "half_frozen_backbone": cfg.half_frozen_backbone,
            "half_frozen_params": half_cast_params, "sdpa_backend": cfg.sdpa_backend,
            "tf32": bool(cfg.tf32 and device.type == "cuda"), "compile": cfg.compile}
