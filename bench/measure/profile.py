"""Profiling of a run: parameter counts, step time, throughput, exact FLOPs and peak memory over the training window.

Conventions: times in seconds (``_s``) or milliseconds (``_ms``), memory in bytes (``_bytes``). Step time is the
median over measured steps after warm-up, synchronised on GPU, evaluation excluded. FLOPs are 2 x MACs counted by
``torch.utils.flop_counter.FlopCounterMode`` with attention made visible (``exact_attention_counting``). Peak memory
names its source in ``peak_mem_kind``: ``cuda_max_allocated`` (CUDA allocator, ``MemoryWindow``),
``cpu_profiler_live_tensors`` (torch profiler memory timeline, ``cpu_peak_memory``) or a labelled fallback.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import json
import os
import tempfile
import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, Category
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from bench.errors import BenchError
from bench.measure.native_logs import KINETO_NOISE, native_stderr_without
from bench.numerics import Numerics, TrainingStep

if TYPE_CHECKING:  # measure reads the sections it is given and imports no config at run time (docs/architecture.md)
    from bench.config import ProfileConfig


class ProfileError(BenchError, ValueError):
    """A measurement cannot be made or read; the message says which and why."""


class GpuBusyError(ProfileError):
    """Other processes hold memory on the GPU, so a peak-memory or timing measurement would be distorted."""


def count_parameters(model: nn.Module, base_ids: set[int]) -> dict:
    """Total / trainable / added parameters; ``added`` = parameters that did not exist before the strategy."""
    params = list({id(p): p for p in model.parameters()}.values())
    return {
        "params_total": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
        "params_added": sum(p.numel() for p in params if id(p) not in base_ids),
    }


def step_time_stats(step_times_s: list[float], *, warmup_steps: int, batch_size: int) -> dict:
    """Median step time after dropping ``warmup_steps``, and the matching throughput in clips per second."""
    measured = step_times_s[warmup_steps:] or step_times_s
    if not measured:
        return {"step_time_ms_median": None, "throughput_clips_per_s": None, "steps_timed": 0}
    median_s = float(np.median(measured))
    return {"step_time_ms_median": 1000.0 * median_s, "throughput_clips_per_s": batch_size / median_s,
            "steps_timed": len(measured)}


class MemoryWindow:
    """Peak memory over one or more training windows (GPU: CUDA allocator statistics)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peaks: dict[str, int] = {}

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._keep_max("cuda_max_allocated_bytes", torch.cuda.max_memory_allocated(self.device))
            self._keep_max("cuda_max_reserved_bytes", torch.cuda.max_memory_reserved(self.device))
        return False

    def _keep_max(self, key: str, value: int) -> None:
        self.peaks[key] = max(self.peaks.get(key, 0), int(value))

    def summary(self) -> dict:
        if "cuda_max_allocated_bytes" in self.peaks:
            return {"peak_mem_bytes": self.peaks["cuda_max_allocated_bytes"], "peak_mem_kind": "cuda_max_allocated",
                    **self.peaks}
        return {}


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------------

FLOPS_CONVENTION = ("FLOPs = 2 x MACs; torch.utils.flop_counter.FlopCounterMode formulas for matmul, conv and "
                    "attention (norms, softmax, activations and other elementwise ops count 0); attention by the "
                    "math SDPA kernel with the MHA fast path off; train step = forward + backward, the optimizer "
                    "update has no MACs and counts 0 (see optimizer_update_flops_approx)")
# Adam's elementwise update per trainable scalar (torch.optim.Adam, no weight decay, no amsgrad): exp_avg lerp 3,
# exp_avg_sq mul + addcmul 4, sqrt / bias-correction / add eps 3, addcdiv 3 = 13 FLOPs (Kingma & Ba, 2015, Alg. 1).
ADAM_FLOPS_PER_PARAM = 13


@contextlib.contextmanager
def exact_attention_counting():
    """Make every attention matmul visible to ``FlopCounterMode``.

    ``nn.MultiheadAttention``'s fast path (taken under no_grad / eval, e.g. a frozen backbone or side tuning's
    no-grad backbone) is one fused op without a formula: the count drops by 36% on ViT-B/16. The math SDPA
    kernel decomposes attention into matmuls the counter knows on every device. Global flags are restored on exit.
    """
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


@contextlib.contextmanager
def preserved_training_state(model: nn.Module, *, numerics: Numerics,
                             optimizer: torch.optim.Optimizer | None = None):
    """Let measuring code train ``model`` for a step and leave no trace: trainable parameters, buffers (BatchNorm
    statistics), ``.grad`` references, train/eval flags, optimizer state, the fp16 gradient scaler and the RNG
    streams come back as they were. The copies are never touched by an op, so the memory profiler does not see
    them."""
    tensors = [p for p in model.parameters() if p.requires_grad] + list(model.buffers())
    saved = [t.detach().clone() for t in tensors]
    grads = [(p, p.grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    scaler_state = copy.deepcopy(numerics.scaler.state_dict()) if numerics.scaler is not None else None
    cuda = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        try:
            yield
        finally:
            with torch.no_grad():
                for tensor, copy_ in zip(tensors, saved, strict=True):
                    tensor.copy_(copy_)
            for param, grad in grads:
                param.grad = grad
            for module, training in modes:
                module.training = training
            if optimizer is not None:
                optimizer.load_state_dict(optimizer_state)
            if scaler_state is not None:
                numerics.scaler.load_state_dict(scaler_state)


def measure_flops(model: nn.Module, video: torch.Tensor, target: torch.Tensor, *, loss_fn: nn.Module,
                  numerics: Numerics) -> dict:
    """Exact FLOPs of one training step of ``model`` on this batch, in train mode, state left unchanged.

    Forward and backward are counted separately; backward work depends on where the first trainable tensor sits
    (frozen backbone ~1x the head's forward, full fine-tuning ~2x the whole forward). ``fwd_flops_per_clip`` is
    the batch forward / B (the batch-independent text projection is spread over the B clips). A batch whose loss
    needs no gradient (nothing trainable) counts forward only. The forward runs in the run's precision (a
    half-precision frozen backbone needs autocast), attention always by the math kernel.
    """
    with preserved_training_state(model, numerics=numerics):
        model.train()
        return count_step_flops(model, video, target, loss_fn=loss_fn, numerics=numerics)


def count_step_flops(model: nn.Module, video: torch.Tensor, target: torch.Tensor, *, loss_fn: nn.Module,
                     numerics: Numerics) -> dict:
    """The counting of ``measure_flops`` without saving and restoring the model: one forward (in the model's
    current mode) and, if the loss needs one, one backward, which leaves gradients behind."""
    with FlopCounterMode(display=False) as forward:
        with numerics.forward_context(), exact_attention_counting():  # math kernel wins over the run's policy
            logits = model(video)
        loss = loss_fn(logits.float(), target)
    backward_flops = 0
    if loss.requires_grad:
        with FlopCounterMode(display=False) as backward, exact_attention_counting():  # recomputation alike
            loss.backward()
        backward_flops = backward.get_total_flops()
    return flops_record(forward, backward_flops, batch=video.shape[0], model=model)


def flops_record(forward: FlopCounterMode, backward_flops: int, *, batch: int, model: nn.Module) -> dict:
    """The FLOP figures of a record from a counter of the forward (and loss) and the backward's total."""
    forward_flops = forward.get_total_flops()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"fwd_flops_by_module": flops_by_module(forward),
            "fwd_flops_per_clip": forward_flops / batch, "fwd_flops_batch": forward_flops,
            "bwd_flops_batch": backward_flops, "train_step_flops": forward_flops + backward_flops,
            "optimizer_update_flops_approx": ADAM_FLOPS_PER_PARAM * trainable, "flops_batch_size": batch,
            "flops_convention": FLOPS_CONVENTION, "flops_counter": f"torch {torch.__version__} FlopCounterMode"}


def _math_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """A fused attention counted as the math kernel's two matmuls, Q.K^T and P.V (torch's own sdpa formula)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _math_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                   **kwargs) -> int:
    """A fused attention's backward counted as the math kernel's: each forward matmul has two gradient matmuls of
    its size, so twice the forward (torch's own fused-backward formula adds a recomputation of Q.K^T, which the math
    kernel does not do)."""
    return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)


# Counter formulas that make a FlopCounterMode running the run's own CPU attention kernel (flash) count what the
# math kernel of ``exact_attention_counting`` counts, op for op: a step counted with them needs no second pass under
# the math kernel (the cost plan, bench/measure/plan.py; tests/test_plan.py checks the two agree).
FUSED_ATTENTION_AS_MATH = {op: formula for name, formula in (
    ("_scaled_dot_product_flash_attention_for_cpu", _math_attention_flops),
    ("_scaled_dot_product_flash_attention_for_cpu_backward", _math_attention_backward_flops))
    if (op := getattr(torch.ops.aten, name, None)) is not None}


def flops_by_module(counter: FlopCounterMode, depth: int = 2) -> dict[str, int]:
    """Where a forward pass's FLOPs go: per module of at most ``depth`` dotted name parts, each module's own share
    (its children at that depth subtracted), largest first; ``(outside modules)`` is what ran outside the model's
    modules (the loss). The shares sum to the counter's total. Forward only: ``FlopCounterMode`` charges backward
    work to whichever module's output hook fires (identity layers such as open_clip's ``ls_1`` / ``ls_2`` collect
    it), so backward has no trustworthy split; its total is ``bwd_flops_batch``."""
    inclusive: dict[tuple[str, ...] | None, int] = {}  # None: everything; (): the model; ("vision",): model.vision
    for path, ops in counter.get_flop_counts().items():
        key = None if path == "Global" else tuple(path.split(".")[1:])  # the root class name dropped
        if key is None or len(key) <= depth:
            inclusive[key] = int(sum(ops.values()))
    own = dict(inclusive)
    for key, flops in inclusive.items():
        parent = key[:-1] if key else None  # the model's parent is everything
        if key is not None and parent in own:
            own[parent] -= flops
    names = {None: "(outside modules)", (): "(model)"}
    shares = ((names[k] if k in names else ".".join(k), v) for k, v in own.items() if v)
    return dict(sorted(shares, key=lambda item: -item[1]))


# ---------------------------------------------------------------------------------------------------------------------
# CPU memory
# ---------------------------------------------------------------------------------------------------------------------

# The profiler's memory categories; a timeline row is [unused, one size per category in _CATEGORY_TO_INDEX order].
_CATEGORY_NAMES = {Category.PARAMETER: "params", Category.OPTIMIZER_STATE: "optimizer_state",
                   Category.INPUT: "inputs", Category.TEMPORARY: "temporaries", Category.ACTIVATION: "activations",
                   Category.GRADIENT: "grads", Category.AUTOGRAD_DETAIL: "autograd_detail", None: "unknown"}


def cpu_peak_memory(step: TrainingStep, video: torch.Tensor, target: torch.Tensor) -> dict:
    """Peak live-tensor bytes of one CPU training step (forward, backward, optimizer.step), by category.

    CPU has no allocator statistics and tracemalloc does not see tensors, so the torch profiler's memory timeline is
    used: deterministic, and it names what is live at the peak (params, grads, optimizer state, activations). The step
    must find Adam's state allocated, as in steady-state training: after training it is; otherwise one un-profiled
    warm-up step runs first. Both take the training loop's own step (``TrainingStep``); the model and optimizer
    are restored afterwards, so the call may sit before or after evaluation. If the profiler fails, a sampled RSS delta
    is reported under another kind.
    """
    one_step = functools.partial(step, video, target)
    with preserved_training_state(step.model, numerics=step.numerics, optimizer=step.optimizer):
        step.model.train()
        if not step.optimizer.state:  # called before any training step: create the optimizer state first
            one_step()
        try:
            return _profiled_step_peak(one_step)
        except Exception as error:  # the memory profiler is private API whose internals change between releases
            fallback = _rss_step_peak(one_step, step.optimizer)
            return {**fallback, "peak_mem_fallback_reason": f"{type(error).__name__}: {error}"[:300]}


# The profiler's Python tracer records every module call's parameters with their ``.grad``; inside LoRA's merge-free
# attention (strategies/common.py) those are the non-leaf W + dW tensors ``functional_call`` substitutes, whose
# ``.grad`` torch warns about reading. Nothing is wrong with the step, so that one warning is silenced here.
@contextlib.contextmanager
def quiet_non_leaf_grad_reads():
    """Silence that one warning (and only it) while a tracer reads the ``.grad`` of every module's tensors."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        yield


def _profiled_step_peak(step) -> dict:
    with native_stderr_without(KINETO_NOISE), quiet_non_leaf_grad_reads(), \
            profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                    with_stack=True) as prof:
        step()
    rows = _memory_timeline_rows(prof)
    totals = [sum(row) for row in rows]
    peak = int(np.argmax(totals))
    names = sorted(_CATEGORY_NAMES, key=lambda category: _CATEGORY_TO_INDEX[category])
    by_category = {_CATEGORY_NAMES[c]: int(size) for c, size in zip(names, rows[peak][1:], strict=True)}
    return {"peak_mem_bytes": int(totals[peak]), "peak_mem_kind": "cpu_profiler_live_tensors",
            "peak_mem_by_category_bytes": by_category,
            **{f"peak_mem_{name}_bytes": size for name, size in by_category.items()}}


def _memory_timeline_rows(prof) -> list[list[int]]:
    """Sizes by category at every timestamp, from ``export_memory_timeline`` (JSON: [times, sizes])."""
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for CUDA in favour of memory snapshots
        path = os.path.join(folder, "memory.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as file:
            _, rows = json.load(file)
    if not rows or len(rows[0]) != len(_CATEGORY_NAMES) + 1:
        raise ProfileError(f"memory timeline: expected rows of {len(_CATEGORY_NAMES) + 1} sizes, got "
                           f"{len(rows[0]) if rows else 'no rows'}")
    return rows


def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), None where unavailable."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _malloc_trim() -> None:
    """Return freed heap pages to the OS so RSS reflects live memory (glibc only; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_step_peak(step, optimizer) -> dict:
    """Fallback: RSS sampled every millisecond during one step, minus the level before it (after malloc_trim).
    Memory that exists before the step (params, optimizer state) is therefore not included."""
    optimizer.zero_grad(set_to_none=True)  # what the step does first; freed before the trim, not reused unseen
    _malloc_trim()
    base, peak, stop = _rss_bytes(), [0], threading.Event()
    if base is None:
        return {"peak_mem_bytes": None, "peak_mem_kind": "unavailable"}

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], (_rss_bytes() or base) - base)
            stop.wait(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        step()
    finally:
        stop.set()
        sampler.join()
    peak[0] = max(peak[0], (_rss_bytes() or base) - base)  # gradients are still live after the step
    return {"peak_mem_bytes": int(peak[0]), "peak_mem_kind": "cpu_rss_delta_sampled"}


# Modules of the PAR model down to this depth get their own activation figure (e.g. ``vision.frames``,
# ``vision.side_ssn``, ``fusion.attn``): deep enough to tell backbone from side network, short enough for a table.
ACTIVATION_MODULE_DEPTH = 2


def activation_bytes_by_module(model: nn.Module, video: torch.Tensor, *, numerics: Numerics,
                               depth: int = ACTIVATION_MODULE_DEPTH) -> dict:
    """Bytes autograd keeps for backward during one training forward, by the module whose forward saved them
    (``SavedActivations``). The model's state is left unchanged."""
    with preserved_training_state(model, numerics=numerics), SavedActivations(model, depth=depth) as saved:
        model.train()
        with numerics.forward_context():
            model(video)
    return saved.summary()


def storage_key(tensor: torch.Tensor) -> int:
    """Identity of the memory a tensor lives in: its storage object (shared by views), which fake tensors have too
    (their data pointers are all 0)."""
    return tensor.untyped_storage()._cdata


class SavedActivations:
    """While active, every tensor autograd saves for backward during ``model``'s forward passes
    ``torch.autograd.graph.saved_tensors_hooks``; it is charged once (by storage) to the innermost module of at most
    ``depth`` dotted name parts that was running. Parameters are not activations and are left out; autocast's
    low-precision copies of weights are counted (they are held for backward). A module running under ``no_grad``
    saves nothing: this is why a frozen backbone or side tuning's no-grad CLIP costs no activation memory.

    Recording spans the model's own forward only (opened and closed by hooks on ``model``), so a whole training
    step may run inside: the loss and a recomputation during backward are not charged. ``on_save(tensor, module)``
    is called once per charged storage (the cost plan classifies the memory alive at its peak with it).
    """

    def __init__(self, model: nn.Module, *, depth: int = ACTIVATION_MODULE_DEPTH, on_save=None):
        self.model, self.depth, self.on_save = model, depth, on_save
        self.charged: dict[int, tuple[str, int]] = {}  # storage key -> (module, bytes)
        self._stack, self._handles, self._hooks = ["(model)"], [], contextlib.ExitStack()

    def __enter__(self) -> SavedActivations:
        self._params = {storage_key(p) for p in self.model.parameters()}
        for name, module in self.model.named_modules():
            if name and name.count(".") < self.depth:
                self._handles += [module.register_forward_pre_hook(self._enter(name)),
                                  module.register_forward_hook(self._leave)]
        self._handles += [self.model.register_forward_pre_hook(self._open),
                          self.model.register_forward_hook(self._close)]
        return self

    def __exit__(self, *exc) -> bool:
        self._hooks.close()  # a forward that raised leaves the hooks open
        for handle in self._handles:
            handle.remove()
        return False

    def _enter(self, name: str):
        return lambda _module, _args: self._stack.append(name)  # returns None: the module's input is left alone

    def _leave(self, _module, _args, _output) -> None:
        self._stack.pop()

    def _open(self, _module, _args) -> None:
        self._hooks.enter_context(torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor))

    def _close(self, _module, _args, _output) -> None:
        self._hooks.close()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = storage_key(tensor)
        if key not in self._params and key not in self.charged:
            self.charged[key] = (self._stack[-1], tensor.untyped_storage().nbytes())
            if self.on_save is not None:
                self.on_save(tensor, self._stack[-1])
        return tensor

    def summary(self) -> dict:
        by_module: dict[str, int] = {}
        for module_name, size in self.charged.values():
            by_module[module_name] = by_module.get(module_name, 0) + size
        return {"activation_saved_bytes": sum(by_module.values()),
                "activation_saved_bytes_by_module": dict(sorted(by_module.items(), key=lambda kv: -kv[1]))}


# ---------------------------------------------------------------------------------------------------------------------
# GPU (NVML)
# ---------------------------------------------------------------------------------------------------------------------

# Memory other processes may hold on the GPU before a measurement is refused. Any process with a CUDA context holds
# a few hundred MiB, so this tolerates only monitoring agents and rounding.
FOREIGN_GPU_LIMIT_BYTES = 64 * 2**20


@contextlib.contextmanager
def _nvml_session(device: torch.device):
    """Yield (pynvml, device handle), or None without CUDA, without nvidia-ml-py or when NVML cannot start."""
    pynvml = _start_nvml() if device.type == "cuda" and torch.cuda.is_available() else None
    if pynvml is None:
        yield None
        return
    try:
        yield pynvml, pynvml.nvmlDeviceGetHandleByIndex(_nvml_index(device))
    finally:
        pynvml.nvmlShutdown()


def _start_nvml():
    """The initialised ``pynvml`` module (package nvidia-ml-py), or None: not installed, or no driver / GPU
    (``nvmlInit`` raises ``pynvml.NVMLError``, e.g. ``NVMLError_LibraryNotFound``)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml


def _nvml_index(device: torch.device) -> int:
    """NVML numbers GPUs physically; CUDA_VISIBLE_DEVICES renumbers them for CUDA (torch maps one to the other)."""
    index = device.index or 0
    try:
        return torch.cuda._get_nvml_device_index(index)
    except (AttributeError, RuntimeError):
        return index


def _foreign_usage(processes, own_pid: int) -> tuple[int, int]:
    """(bytes, count) of GPU processes other than this one; unknown usage (None) counts as over the limit."""
    others = [p for p in processes if p.pid != own_pid]
    used = sum(FOREIGN_GPU_LIMIT_BYTES + 1 if p.usedGpuMemory is None else int(p.usedGpuMemory) for p in others)
    return used, len(others)


def gpu_memory_guard(device: torch.device) -> dict | None:
    """Refuse to measure on a GPU that other processes already use: their memory and kernels would distort the
    peak and the step time. Call it before the run puts anything on the GPU (inside a container NVML may list
    this very process under a host PID). Returns what NVML saw, or None on CPU / without NVML."""
    with _nvml_session(device) as session:
        if session is None:
            return None
        pynvml, handle = session
        processes = (pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                     + pynvml.nvmlDeviceGetGraphicsRunningProcesses(handle))
        foreign_bytes, count = _foreign_usage(processes, os.getpid())
        used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    if foreign_bytes > FOREIGN_GPU_LIMIT_BYTES:
        raise GpuBusyError(f"{device}: {count} other process(es) hold {foreign_bytes / 2**20:.0f} MiB of GPU memory "
                           f"(limit {FOREIGN_GPU_LIMIT_BYTES / 2**20:.0f} MiB); measure on an idle GPU")
    return {"nvml_foreign_processes": count, "nvml_foreign_bytes": foreign_bytes, "nvml_used_bytes_before": used}


def nvml_used_bytes(device: torch.device) -> int | None:
    """Device-wide used memory as NVML reports it (CUDA context + the caching allocator's reserved pool + anything
    else on the GPU); None on CPU or without NVML. Sample it right after the training window."""
    with _nvml_session(device) as session:
        if session is None:
            return None
        pynvml, handle = session
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)


# ---------------------------------------------------------------------------------------------------------------------
# All of it for one run
# ---------------------------------------------------------------------------------------------------------------------

def profile_extras(step: TrainingStep, batch: tuple[torch.Tensor, torch.Tensor], *, cfg: ProfileConfig) -> dict:
    """FLOPs (every device), CPU peak memory (CPU only: on GPU ``MemoryWindow`` gives the peak) and the NVML
    device figure (GPU only) for one training batch of ``step``. Leaves model and optimizer as they were; call it
    outside ``MemoryWindow`` so that its extra work does not count as training memory."""
    if not cfg.enabled:
        return {}
    model, numerics, device = step.model, step.numerics, step.device
    video, target = (t.to(device) for t in batch)
    out: dict = {}
    if cfg.memory and device.type == "cuda":
        out["nvml_device_used_bytes"] = nvml_used_bytes(device)  # before FLOP counting grows the reserved pool
    if cfg.flops:
        out.update(measure_flops(model, video, target, loss_fn=step.loss_fn, numerics=numerics))
    if cfg.memory and device.type == "cpu":
        out.update(cpu_peak_memory(step, video, target))
    if cfg.memory:
        out.update(activation_bytes_by_module(model, video, numerics=numerics))
    return out
