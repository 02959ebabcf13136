"""The cost of a training step without running it: FLOPs and peak memory of one step traced on fake tensors.

A fake tensor (``torch._subclasses.fake_tensor.FakeTensorMode``) has a shape, a dtype, a device and a storage, but
no data: every op runs its shape function only. The step traced here is the training loop's own
(``Numerics.train_step``: zero_grad, forward under the run's autocast and attention policy, loss in fp32, backward,
optimizer step), so what it allocates is what the real step allocates, op by op, without the compute:

- FLOPs are counted with the measured runs' own counter (``FlopCounterMode``, forward with the loss and backward
  apart, ``profile.flops_record``), so a predicted count equals the measured one: same ops, same shapes, same
  formulas. Measured runs count attention through the math kernel in a pass of their own; the traced step keeps the
  run's kernel, whose fused attention ops count as the math kernel's matmuls (``profile.FUSED_ATTENTION_AS_MATH``).
- Memory is followed by ``torch.distributed._tools.mem_tracker.MemTracker``, which sees every storage an op
  creates and its release, and files it as parameter, buffer, gradient, activation, temporary or optimizer state.
  What it lacks is added here (``_PeakTracker``): which storages are alive at the step's peak, so that the peak
  splits into activations saved for backward (``profile.SavedActivations``, the measured runs' definition) and
  temporaries, and optimizer state from the optimizer's own temporaries; and the phase the peak falls in.

The memory convention is that of the CPU measurement (``profile.cpu_peak_memory``): live tensor bytes, exact, no
allocator rounding, counted from the step's ``zero_grad``, with the optimizer state held from the start as in
steady-state training (the step is traced as a fresh optimizer's first; ``_PeakTracker.steady_peak`` adds the state
where the first step has not created it yet). The CPU profiler counts a tensor older than the step only if an op of
the step reads it, so ``peak_bytes_predicted_cpu_profiler`` leaves out weights the step never reads
(``unread_bytes``: e.g. the CLIP block after the last tap of a side network); ``peak_bytes_predicted`` keeps them,
as the process holds them. Not modelled: memory a CPU kernel allocates inside itself (workspaces without a tensor:
the profiler's ``unknown``; in bf16 / fp16 a few packed weights), in the reference runs at most 0.63% of the peak;
an fp16 step the gradient scaler skips (overflow; the plan's step is taken); allocator caching and rounding (CPU has
none); ``torch.compile`` (the eager op sequence is traced); DDP's gradient buckets.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings

import torch
from torch import nn
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker, _MemRefType, _ModState, _UpdateType
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from bench.measure import profile
from bench.measure.precision import Numerics
from bench.measure.profile import ACTIVATION_MODULE_DEPTH, SavedActivations, storage_key

PLAN_SCHEMA_VERSION = 1
MEMORY_CONVENTION = ("bytes of live tensors (CPU profiler convention: exact sizes, no allocator rounding), from the "
                     "step's zero_grad to the end of its optimizer step, optimizer state held from the start as in "
                     "steady-state training; traced on fake tensors with "
                     "torch.distributed._tools.mem_tracker.MemTracker")
# Categories of the predicted peak, in the order tables show them.
CATEGORIES = ("weights", "inputs", "gradients", "optimizer_state", "activations", "temporaries")


_aten = torch.ops.aten
_DEVICE_QUERY = torch.ops.prim.device.default


class _NoHook:
    def remove(self) -> None:
        pass


_NO_HOOK = _NoHook()


class _PeakTracker(MemTracker):
    """``MemTracker`` that also logs every change of its running total and the points where it looks for a peak
    (after every op), so that the step's peak can be found afterwards with the optimizer state counted from the
    start (``steady_peak``) and the storages alive then listed."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple] = []  # (update type, storage info, its category then, its bytes then)
        self.checks: list[tuple[int, str]] = []  # (log length, phase) after every op
        self.saved, self.touched = set(), set()
        self._by_name: dict[str, object] = {}

    def _update_snap(self, u_type, winfo, old_mem_consumed=None, old_reftype=None) -> None:
        super()._update_snap(u_type, winfo, old_mem_consumed, old_reftype)
        self.log.append((u_type, winfo, winfo.reftype, winfo.mem_consumed))

    def _update_peak_stats(self, peak_state) -> None:
        """MemTracker's per-module peaks, visiting the running modules only (it scans every module it has seen, on
        every op: most of a ViT's trace time); the step's own peak is found afterwards (``steady_peak``)."""
        current = self._curr_mem_snap
        if len(self._by_name) != len(self.memory_tracking):
            self._by_name = {stats.mod_fqn: stats for stats in self.memory_tracking.values()}
        for name in self._mod_tracker.parents:
            stats = self._by_name.get(name)
            if stats is None or peak_state not in stats.snapshots:
                continue
            for dev, snap in current.items():
                if stats.local_peak.get(dev, 0) < snap[_TOTAL_KEY]:
                    stats.local_peak[dev] = snap[_TOTAL_KEY]
                    stats.snapshots[peak_state][-1][dev] = dict(snap)
        phase = "optimizer step" if self._in_opt else "backward" if self._mod_tracker.is_bw else "forward"
        self.checks.append((len(self.log), phase))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """Also note every storage an op reads (``touched``): a tensor that existed before the step and that no op
        reads is invisible to the CPU profiler's memory timeline. A device query (the autograd engine asks one for
        nearly every tensor it meets, and on fake tensors each is an op) allocates nothing and is passed on."""
        if func is _DEVICE_QUERY:
            return func(*args, **(kwargs or {}))
        for arg in tree_flatten((args, kwargs or {}))[0]:
            if isinstance(arg, torch.Tensor):
                self.touched.add(storage_key(arg))
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _track_module_params_and_buffers(self, module: nn.Module, install_grad_hooks: bool = True):
        """MemTracker hooks every parameter to see its gradient, but a frozen parameter refuses a hook and a
        non-leaf one (LoRA on ``nn.MultiheadAttention`` swaps in its merged weight during the forward) refuses the
        post-accumulate hook: those are marked as hooked already, with handles that remove nothing."""
        for param in module.parameters():
            if not (param.requires_grad and param.is_leaf) and self._param_to_grad_hook_handles.get(param) is None:
                self._param_to_grad_hook_handles[param] = (_NO_HOOK, _NO_HOOK)
        return super()._track_module_params_and_buffers(module, install_grad_hooks)

    def mark_saved(self, tensor: torch.Tensor, _module: str) -> None:
        """``SavedActivations``' callback: this storage is held for backward."""
        entry = self._WINFO.get(tensor.untyped_storage())
        if entry is not None:
            self.saved.add(id(entry[0]))

    def steady_peak(self, state: set[int], state_bytes: int) -> tuple[int, int, int, str]:
        """(bytes, log position, optimizer-state bytes not yet created there, phase) of the step's peak had the
        optimizer state ``state`` (ids of storage infos) existed from the start, as it does after the first step.

        The traced step is a first step: the state is created inside ``optimizer.step`` (Adam's ``_init_group``,
        before any update), for exactly the parameters that received a gradient. Every other allocation is the same
        in later steps, so a later step holds, at every point, what the first held plus the state not created yet.
        """
        sizes: dict[int, int] = {}
        total = created = 0
        best = (-1, 0, 0, "before the step")
        checks = iter(self.checks + [(len(self.log), "end")])
        check = next(checks)
        for position, (u_type, winfo, _, size) in enumerate(self.log + [(None, None, None, 0)]):
            while check[0] == position:
                missing = state_bytes - created
                if total + missing > best[0]:
                    best = (total + missing, position, missing, check[1])
                check = next(checks, (-1, ""))
            if u_type == _UpdateType.ADD:
                sizes[id(winfo)] = size
                total += size
                created += size if id(winfo) in state else 0
            elif u_type == _UpdateType.DEL:
                total -= sizes.pop(id(winfo), 0)
            elif u_type == _UpdateType.SIZE:
                total += size - sizes.get(id(winfo), 0)
                sizes[id(winfo)] = size
        return best

    def alive_at(self, position: int) -> list[tuple]:
        """(storage info, category, bytes) of every storage alive at ``position`` in the log."""
        alive: dict[int, list] = {}
        for u_type, winfo, reftype, size in self.log[:position]:
            if u_type == _UpdateType.ADD:
                alive[id(winfo)] = [winfo, reftype, size]
            elif u_type == _UpdateType.DEL:
                alive.pop(id(winfo), None)
            elif id(winfo) in alive:
                alive[id(winfo)][1:] = [reftype, size]
        return [tuple(entry) for entry in alive.values()]


def _category(winfo, reftype, *, saved: set[int], state: set[int]) -> str:
    if reftype in (_MemRefType.PARAM, _MemRefType.BUFFER):
        return "weights"
    if reftype == _MemRefType.OTH:
        return "inputs"
    if reftype == _MemRefType.GRAD:
        return "gradients"
    if reftype == _MemRefType.OPT:
        return "optimizer_state" if id(winfo) in state else "temporaries"
    return "activations" if id(winfo) in saved else "temporaries"  # ACT / TEMP


_NORMS = (_aten.native_layer_norm.default, _aten.native_batch_norm.default, _aten.native_group_norm.default,
          _aten._native_batch_norm_legit.default)
_LOW = (torch.bfloat16, torch.float16)
_SCALAR_DRAWS = (_aten.rand.default, _aten.rand.generator, _aten.randn.default, _aten.randn.generator)


class _AsTheCpuRuns(TorchDispatchMode):
    """Where a fake op would not do what the real CPU step does, make it.

    - A normalisation of a bf16 / fp16 input with fp32 parameters (autocast keeps norm layers' weights fp32; so does
      a half-frozen backbone) returns the statistics it saves for backward (mean, reciprocal std) in fp32 on CPU, but
      in the input's dtype from the op's meta function: activations would come out 2 bytes short per statistic.
    - A single random number that decides a branch (peft's LoKr / LoHa module dropout: ``torch.rand(1) > p``) has no
      value on fake tensors; it is drawn for real and handed on as a constant, so the branch is taken as it would be.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _DEVICE_QUERY:
            return func(*args, **kwargs)
        if func in _SCALAR_DRAWS and math.prod(args[0]) <= 1:
            with unset_fake_temporarily():
                value = func(*args, **kwargs)
                number, dtype = value.tolist(), value.dtype
            return torch.tensor(number, dtype=dtype)  # a constant of the fake mode
        out = func(*args, **kwargs)
        if func in _NORMS and _mixed_on_cpu(args):
            return (out[0], *(t.float() for t in out[1:]))
        return out


def _mixed_on_cpu(args) -> bool:
    x = args[0]
    return x.device.type == "cpu" and x.dtype in _LOW and \
        any(isinstance(a, torch.Tensor) and a.dtype == torch.float32 for a in args[1:])


class _TracingScaler(torch.amp.GradScaler):
    """fp16's gradient scaler for a traced step: the same scaling, unscaling and scale update, but its overflow check
    (a ``.item()`` on the found-inf flag) assumes finite gradients, as fake tensors hold no values to check."""

    def _maybe_opt_step(self, optimizer, optimizer_state, *args, **kwargs):
        return optimizer.step(*args, **kwargs)


class _TotalOnly:
    """Module tracking for a backward ``FlopCounterMode``: every count goes to its total, the only backward figure
    a record keeps. A real ``ModuleTracker`` active during backward hooks the outputs of every module recomputed
    there (activation checkpointing), and those hooks keep the recomputed graph's tensors alive: the traced peak
    of a recomputed side network came out half as large again as the measured one."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _TotalOnly:
        return self

    def __exit__(self, *exc) -> None:
        return None


class _Counting(Numerics):
    """The run's numerics, counting FLOPs on the way as ``profile.measure_flops`` does: the forward and the loss in
    one ``FlopCounterMode``, the backward (recomputation included) in another. The step keeps the run's attention
    kernel, whose fused ops count as the math kernel's matmuls (``profile.FUSED_ATTENTION_AS_MATH``), so one traced
    step gives both the memory and the measured runs' FLOPs. fp16's scaler is a ``_TracingScaler``."""

    def __init__(self, numerics: Numerics):
        super().__init__(device_type=numerics.device_type, dtype=numerics.dtype, sdpa_backend=numerics.sdpa_backend,
                         scaler=None if numerics.scaler is None else _TracingScaler(numerics.device_type))
        self.forward_counter = FlopCounterMode(display=False, custom_mapping=profile.FUSED_ATTENTION_AS_MATH)
        self.backward_counter = FlopCounterMode(display=False, custom_mapping=profile.FUSED_ATTENTION_AS_MATH)
        self.backward_counter.mod_tracker = _TotalOnly()  # see _TotalOnly

    @contextlib.contextmanager
    def forward_context(self):
        self.forward_counter.__enter__()  # left open for the loss; closed when the backward starts
        self._forward_open = True
        with super().forward_context():
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """The backward pass (recomputation included) in its own counter; the optimizer step that follows has no
        FLOP formula, so it runs outside any counter (its thousands of elementwise ops cost trace time only)."""
        self.close_forward()
        with self.backward_counter:
            super().backward(loss)

    def close_forward(self) -> None:
        """Close the forward counter if it is open (also when the step failed before its backward, so that the
        dispatch modes entered around it leave in order)."""
        if getattr(self, "_forward_open", False):
            self._forward_open = False
            self.forward_counter.__exit__(None, None, None)


def trace_step(model: nn.Module, video: torch.Tensor, target: torch.Tensor, *, loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, numerics: Numerics, depth: int = ACTIVATION_MODULE_DEPTH) -> dict:
    """FLOPs and peak memory of one training step of ``model`` (fake tensors, in a ``FakeTensorMode``), traced
    once, exactly as the loop runs it, as the first step of a fresh optimizer; the peak is that of any later step
    (``_PeakTracker.steady_peak``: the optimizer state held from the start). Changes the model and the optimizer:
    call it on throwaway copies."""
    start = time.perf_counter()
    counting = _Counting(numerics)
    if counting.scaler is not None:
        counting.scaler.scale(torch.zeros(()))  # the scale and growth tracker exist after any fp16 step
    model.train()
    optimizer.zero_grad(set_to_none=True)
    before = [*model.parameters(), *model.buffers(), *loss_fn.buffers(), video, target]
    tracker = _PeakTracker()
    with _AsTheCpuRuns():
        tracker.track_external(model, optimizer, video, target, loss_fn)
        with SavedActivations(model, depth=depth, on_save=tracker.mark_saved) as saved, tracker, \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")  # LoRA
            try:
                counting.train_step(model, video, target, loss_fn=loss_fn, optimizer=optimizer)
            finally:
                counting.close_forward()
    flops = profile.flops_record(counting.forward_counter, counting.backward_counter.get_total_flops(),
                                 batch=video.shape[0], model=model)
    memory = _peak_breakdown(tracker, optimizer)
    unread = _unread_bytes(before, tracker.touched)
    return {**flops, **memory, "unread_bytes": unread,
            "peak_bytes_predicted_cpu_profiler": memory["peak_bytes_predicted"] - unread, **saved.summary(),
            "memory_by_module": _by_module(model, tracker, saved, optimizer, depth=depth,
                                           state_bytes=memory["optimizer_state_total_bytes"]),
            "trace_time_s": time.perf_counter() - start}


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def _state_infos(tracker: _PeakTracker, optimizer: torch.optim.Optimizer) -> dict[int, int]:
    """id -> bytes of the storage infos of the optimizer's state (created in the traced step)."""
    entries = (tracker._WINFO.get(t.untyped_storage()) for t in _state_tensors(optimizer))
    return {id(entry[0]): entry[0].mem_consumed for entry in entries if entry is not None}


def _unread_bytes(tensors: list[torch.Tensor], touched: set[int]) -> int:
    """Bytes of the storages among ``tensors`` (all alive through the step) that no op of the step read: weights of
    modules the step never runs, say. They are memory the process holds, but the CPU profiler's timeline counts a
    tensor older than the step only once an op uses it, so the measured CPU peak leaves them out."""
    unread = {storage_key(t): t.untyped_storage().nbytes() for t in tensors if storage_key(t) not in touched}
    return sum(unread.values())


def _peak_breakdown(tracker: _PeakTracker, optimizer: torch.optim.Optimizer) -> dict:
    """The steady-state peak, the phase it falls in, and what is alive then by category."""
    state = _state_infos(tracker, optimizer)
    peak, position, missing, phase = tracker.steady_peak(set(state), sum(state.values()))
    by_category = dict.fromkeys(CATEGORIES, 0)
    raw: dict[str, int] = {_MemRefType.OPT.value: missing}
    for winfo, reftype, size in tracker.alive_at(position):
        by_category[_category(winfo, reftype, saved=tracker.saved, state=set(state))] += size
        raw[reftype.value] = raw.get(reftype.value, 0) + size
    by_category["optimizer_state"] += missing  # the state a later step holds from its start
    if sum(by_category.values()) != peak:  # the replay must reproduce the running total
        raise RuntimeError(f"peak replay: {sum(by_category.values())} bytes alive, running total {peak}")
    return {"peak_bytes_predicted": peak, "peak_phase": phase, "peak_by_category_bytes": by_category,
            "peak_by_memtracker_category_bytes": raw, "optimizer_state_total_bytes": sum(state.values()),
            "memory_convention": MEMORY_CONVENTION}


def _owner(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def _by_module(model: nn.Module, tracker: _PeakTracker, saved: SavedActivations, optimizer, *, depth: int,
               state_bytes: int) -> dict:
    """Per module of at most ``depth`` name parts: its weights, gradients and optimizer state (bytes of its own
    parameters), the activations it saved for backward, and the highest total memory while it ran forward and
    backward (MemTracker's per-module peaks, plus the optimizer state a later step holds then)."""
    rows: dict[str, dict] = {}

    def row(name: str) -> dict:
        return rows.setdefault(name, {"weights_bytes": 0, "gradients_bytes": 0, "optimizer_state_bytes": 0,
                                      "activations_saved_bytes": 0, "peak_forward_bytes": 0,
                                      "peak_backward_bytes": 0})

    seen = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        entry, size = row(_owner(name, depth)), tensor.untyped_storage().nbytes()
        entry["weights_bytes"] += size
        if isinstance(tensor, nn.Parameter) and tensor.requires_grad:
            entry["gradients_bytes"] += size
            entry["optimizer_state_bytes"] += sum(v.untyped_storage().nbytes()
                                                  for v in optimizer.state.get(tensor, {}).values()
                                                  if isinstance(v, torch.Tensor))
    for module, size in saved.summary()["activation_saved_bytes_by_module"].items():
        row(module)["activations_saved_bytes"] += size
    for stats in tracker.memory_tracking.values():
        name = stats.mod_fqn.partition(".")[2]  # the root's class name dropped
        if name and name.count(".") < depth:
            for state, key in ((_ModState.PEAK_FW, "peak_forward_bytes"), (_ModState.PEAK_BW, "peak_backward_bytes")):
                totals = [snap[dev]["Total"] for snap in stats.snapshots.get(state, []) for dev in snap]
                row(name)[key] = max(totals, default=-state_bytes) + state_bytes
    return dict(sorted(rows.items(), key=lambda kv: -(kv[1]["weights_bytes"] + kv[1]["activations_saved_bytes"])))
