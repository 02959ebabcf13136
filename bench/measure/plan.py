"""The cost of a training step without running it: FLOPs and peak memory of one step traced on fake tensors.

A fake tensor (``torch._subclasses.fake_tensor.FakeTensorMode``) has a shape, a dtype, a device and a storage, but
no data: every op runs its shape function only. The step traced here is the training loop's own
(``bench.numerics.TrainingStep``: zero_grad, forward under the run's autocast and attention policy, loss in fp32,
backward, optimizer step), so what it allocates is what the real step allocates, op by op, without the compute:

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
import functools
import math
import time

import numpy as np
import torch
from torch import nn
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType, _UpdateType
from torch.utils.flop_counter import FlopCounterMode

from bench.measure import profile
from bench.measure.profile import ACTIVATION_MODULE_DEPTH, SavedActivations, storage_key
from bench.numerics import Numerics, TrainingStep

PLAN_SCHEMA_VERSION = 1
MEMORY_CONVENTION = ("bytes of live tensors (CPU profiler convention: exact sizes, no allocator rounding), from the "
                     "step's zero_grad to the end of its optimizer step, optimizer state held from the start as in "
                     "steady-state training; traced on fake tensors with "
                     "torch.distributed._tools.mem_tracker.MemTracker")
# Categories of the predicted peak, in the order tables show them.
CATEGORIES = ("weights", "inputs", "gradients", "optimizer_state", "activations", "temporaries")


# The batch size a plan traces at: every size and FLOP count of the step is then ``constant + per_clip * MARKER``
# with both parts far below the marker (every tensor's batch-independent part is below 4 GiB, a clip's share of one
# tensor below 2**31 bytes), so one trace splits each exactly into what the batch does not change and what one clip
# adds; fake tensors allocate nothing, so the size is free. The model is affine in the batch (no op mixes clips of a
# batch beyond sums over them); a tensor that is not would overflow the int64 sizes and fail the trace.
MARKER_BATCH = 2 ** 32
FLOP_BASE = 2 ** 64  # the re-encoding of FLOP counts made at the marker batch (``_rebased``)

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
        self.checks: list[tuple[int, str, frozenset]] = []  # (log length, phase, modules running) after every op
        self.saved, self.touched = set(), set()
        self._last_parents: frozenset = frozenset()
        self.counter: FlopCounterMode | None = None  # the FLOP counter of the phase running (``_Counting``)

    def _update_snap(self, u_type, winfo, old_mem_consumed=None, old_reftype=None) -> None:
        super()._update_snap(u_type, winfo, old_mem_consumed, old_reftype)
        self.log.append((u_type, winfo, winfo.reftype, winfo.mem_consumed))

    def _update_peak_stats(self, peak_state) -> None:
        """Where MemTracker updates its per-module peaks (after every op, scanning every module it has seen: most of
        a ViT's trace time), note the point instead, with its phase and the modules running: peaks, overall and by
        module, are found afterwards at any batch size (``StepTrace``)."""
        phase = "optimizer step" if self._in_opt else "backward" if self._mod_tracker.is_bw else "forward"
        parents = self._mod_tracker.parents
        if parents != self._last_parents:
            self._last_parents = frozenset(parents)
        self.checks.append((len(self.log), phase, self._last_parents))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """MemTracker's tracking, with three more duties, in this one dispatch mode (each mode on the stack costs
        every op its own Python round trip):

        - count FLOPs with the ``FlopCounterMode`` in ``counter`` (forward or backward; None in the optimizer step),
          as that mode counts them: an op without a formula runs decomposed where it can, and each op's count goes
          to the modules running (the forward counter shares this tracker's module tracker);
        - run an op as the real CPU step runs it where a fake op would not (``_as_the_cpu_runs``);
        - note every storage an op reads (``touched``): a tensor that existed before the step and that no op reads
          is invisible to the CPU profiler's memory timeline.

        A device query (the autograd engine asks one for nearly every tensor it meets, and on fake tensors each is
        an op) allocates nothing and is passed on."""
        kwargs = kwargs or {}
        if func is _DEVICE_QUERY:
            return func(*args, **kwargs)
        counter = self.counter
        if counter is not None and func not in counter.flop_registry and _decomposes(func):
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        self._touch(args)
        self._touch(kwargs.values())
        out = _as_the_cpu_runs(func, args)(*args, **kwargs)
        # MemTracker.__torch_dispatch__'s tracking of the outputs, without its checks for DTensor and collectives
        # (a single-process fake step has neither) and its pytree walk: a handful of checks per op that add up.
        reftype = _MemRefType.OPT if self._in_opt else \
            _MemRefType.TEMP if self._mod_tracker.is_bw and not self._in_ac else _MemRefType.ACT
        self._track_outputs(reftype, out)
        self._update_peak_stats(None)
        if counter is not None:
            counter._count_flops(func._overloadpacket, out, args, kwargs)
        return out

    def _track_outputs(self, reftype, out) -> None:
        if isinstance(out, torch.Tensor):
            self._track(reftype, out)
        elif isinstance(out, (list, tuple)):
            for item in out:
                self._track_outputs(reftype, item)

    def _touch(self, values) -> None:
        for value in values:  # an op's tensors come alone or in one list (cat, stack, the _foreach_ ops)
            if isinstance(value, torch.Tensor):
                self.touched.add(storage_key(value))
            elif isinstance(value, (list, tuple)):
                self._touch(value)

    def get_tracker_snapshot(self, type: str = "current") -> dict:
        """Empty inside the step: MemTracker snapshots its totals at every module call for per-module peaks that
        ``StepTrace`` finds afterwards at any batch size (``_update_peak_stats``); the copies cost trace time only."""
        return {} if self._depth else super().get_tracker_snapshot(type)

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

    def totals(self, size, state: set[int], state_bytes: int):
        """For every check point: (total bytes, log position, optimizer-state bytes not yet created there, phase,
        modules running), sizes given by ``size(bytes as traced)``, had the optimizer state ``state`` (ids of
        storage infos, ``state_bytes`` in all) existed from the start, as it does after the first step.

        The traced step is a first step: the state is created inside ``optimizer.step`` (Adam's ``_init_group``,
        before any update), for exactly the parameters that received a gradient. Every other allocation is the same
        in later steps, so a later step holds, at every point, what the first held plus the state not created yet.
        """
        sizes: dict[int, int] = {}
        total = created = 0
        checks = iter(self.checks + [(len(self.log), "end", frozenset())])
        check = next(checks)
        for position, (u_type, winfo, _, traced) in enumerate(self.log + [(None, None, None, 0)]):
            while check[0] == position:
                missing = state_bytes - created
                yield total + missing, position, missing, check[1], check[2]
                check = next(checks, (-1, "", None))
            if u_type == _UpdateType.ADD:
                sizes[id(winfo)] = size(traced)
                total += sizes[id(winfo)]
                created += sizes[id(winfo)] if id(winfo) in state else 0
            elif u_type == _UpdateType.DEL:
                total -= sizes.pop(id(winfo), 0)
            elif u_type == _UpdateType.SIZE:
                total += size(traced) - sizes.get(id(winfo), 0)
                sizes[id(winfo)] = size(traced)

    def alive_at(self, position: int, size) -> list[tuple]:
        """(storage info, category, bytes) of every storage alive at ``position`` in the log."""
        alive: dict[int, list] = {}
        for u_type, winfo, reftype, traced in self.log[:position]:
            if u_type == _UpdateType.ADD:
                alive[id(winfo)] = [winfo, reftype, size(traced)]
            elif u_type == _UpdateType.DEL:
                alive.pop(id(winfo), None)
            elif id(winfo) in alive:
                alive[id(winfo)][1:] = [reftype, size(traced)]
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


@functools.cache
def _decomposes(func) -> bool:
    """Whether ``func.decompose`` can do anything (what ``OpOverload.decompose`` asks first): a CompositeImplicit
    kernel, in Python or registered. Asked once per op instead of entering the mode for every call."""
    key = torch._C.DispatchKey.CompositeImplicitAutograd
    return key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)


def _as_the_cpu_runs(func, args):
    """``func``, or where a fake op would not do what the real CPU step does, a callable that does.

    - A normalisation of a bf16 / fp16 input with fp32 parameters (autocast keeps norm layers' weights fp32; so does
      a half-frozen backbone) returns the statistics it saves for backward (mean, reciprocal std) in fp32 on CPU, but
      in the input's dtype from the op's meta function: activations would come out 2 bytes short per statistic.
    - A single random number that decides a branch (peft's LoKr / LoHa module dropout: ``torch.rand(1) > p``) has no
      value on fake tensors; it is drawn for real and handed on as a constant, so the branch is taken as it would be.
    """
    if func in _SCALAR_DRAWS and math.prod(args[0]) <= 1:
        return functools.partial(_drawn_for_real, func)
    if func in _NORMS and _mixed_on_cpu(args):
        return functools.partial(_fp32_statistics, func)
    return func


def _drawn_for_real(func, *args, **kwargs) -> torch.Tensor:
    with unset_fake_temporarily():
        value = func(*args, **kwargs)
        number, dtype = value.tolist(), value.dtype
    return torch.tensor(number, dtype=dtype)  # a constant of the fake mode


def _fp32_statistics(func, *args, **kwargs) -> tuple:
    out = func(*args, **kwargs)
    return (out[0], *(t.float() for t in out[1:]))


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
    one ``FlopCounterMode``, the backward (recomputation included) in another, both driven by the tracker's
    dispatch (``_PeakTracker.counter``). The step keeps the run's attention kernel, whose fused ops count as the math
    kernel's matmuls (``profile.FUSED_ATTENTION_AS_MATH``), so one traced step gives both the memory and the measured
    runs' FLOPs. fp16's scaler is a ``_TracingScaler``."""

    def __init__(self, numerics: Numerics, tracker: _PeakTracker):
        super().__init__(device_type=numerics.device_type, dtype=numerics.dtype, sdpa_backend=numerics.sdpa_backend,
                         scaler=None if numerics.scaler is None else _TracingScaler(numerics.device_type))
        self.tracker = tracker
        self.forward_counter = FlopCounterMode(display=False, custom_mapping=profile.FUSED_ATTENTION_AS_MATH)
        self.forward_counter.mod_tracker = tracker._mod_tracker  # the modules running, as the tracker sees them
        self.backward_counter = FlopCounterMode(display=False, custom_mapping=profile.FUSED_ATTENTION_AS_MATH)
        self.backward_counter.mod_tracker = _TotalOnly()  # see _TotalOnly

    @contextlib.contextmanager
    def forward_context(self):
        self.tracker.counter = self.forward_counter  # left on for the loss; off when the backward starts
        with super().forward_context():
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """The backward pass (recomputation included) in its own counter; the optimizer step that follows has no
        FLOP formula, so it runs outside any counter."""
        self.tracker.counter = self.backward_counter
        try:
            super().backward(loss)
        finally:
            self.tracker.counter = None


def split_marker(value: int, base: int = MARKER_BATCH) -> tuple[int, int]:
    """(batch-independent, per-clip) parts of a size or count made at the marker batch (``MARKER_BATCH``)."""
    per_clip, constant = divmod(int(value), base)
    return constant, per_clip


def _rebased(formula):
    """A FLOP formula whose count, made at the marker batch, is re-encoded as ``constant + per_clip * 2**64``.
    One op's batch-independent count is far below the marker, but a whole step's may not be; Python integers
    hold any size, so the totals of the re-encoded counts still split exactly (``split_marker(total,
    FLOP_BASE)``)."""
    def counted(*args, **kwargs) -> int:
        constant, per_clip = split_marker(formula(*args, **kwargs))
        return constant + per_clip * FLOP_BASE

    return counted


def trace_step(model: nn.Module, video: torch.Tensor, target: torch.Tensor, *, loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, numerics: Numerics, depth: int = ACTIVATION_MODULE_DEPTH
               ) -> StepTrace:
    """One training step of ``model`` on fake tensors (in a ``FakeTensorMode``), traced once, exactly as the loop
    runs it, as the first step of a fresh optimizer; ``StepTrace.cost`` gives its FLOPs and the peak of any later
    step (the optimizer state held from the start). A batch of ``MARKER_BATCH`` clips gives the cost at every batch
    size. Leaves gradients and optimizer state behind."""
    start = time.perf_counter()
    marker = video.shape[0] == MARKER_BATCH
    tracker = _PeakTracker()
    counting = _Counting(numerics, tracker)
    if marker:
        for counter in (counting.forward_counter, counting.backward_counter):
            counter.flop_registry = {op: _rebased(formula) for op, formula in counter.flop_registry.items()}
    if counting.scaler is not None:
        counting.scaler.scale(torch.zeros(()))  # the scale and growth tracker exist after any fp16 step
    model.train()
    optimizer.zero_grad(set_to_none=True)
    before = [*model.parameters(), *model.buffers(), *loss_fn.buffers(), video, target]
    tracker.track_external(model, optimizer, video, target, loss_fn)
    with SavedActivations(model, depth=depth, on_save=tracker.mark_saved) as saved, tracker, \
            profile.quiet_non_leaf_grad_reads():  # LoRA's substituted weights: see there
        try:
            TrainingStep(model, loss_fn, optimizer, counting, video.device)(video, target)
        finally:
            tracker.counter = None
    return StepTrace(tracker=tracker, saved=saved.charged, traced_batch=None if marker else video.shape[0],
                     flops=profile.flops_record(counting.forward_counter,
                                                counting.backward_counter.get_total_flops(), batch=1, model=model),
                     state=_state_infos(tracker, optimizer), unread=_unread_sizes(before, tracker.touched),
                     by_module=_own_bytes_by_module(model, optimizer, depth=depth), depth=depth,
                     trace_time_s=time.perf_counter() - start)


class StepTrace:
    """What one traced step leaves to evaluate, at the traced batch size or, traced at the marker batch, at any:
    the tracker's log of allocations and frees with its check points, the storages saved for backward, the FLOP
    counts, the optimizer state's storages, the weights the step never read and each module's own bytes."""

    def __init__(self, *, tracker: _PeakTracker, saved: dict, traced_batch: int | None, flops: dict,
                 state: dict[int, int], unread: list[int], by_module: dict, depth: int, trace_time_s: float):
        self.tracker, self.saved, self.traced_batch, self.flops = tracker, saved, traced_batch, flops
        self.state, self.unread, self.by_module, self.depth = state, unread, by_module, depth
        self.trace_time_s = trace_time_s

    def sizer(self, batch: int, base: int = MARKER_BATCH):
        """bytes (or FLOPs, with ``base``) as traced -> at ``batch`` clips."""
        if self.traced_batch is not None:
            if batch != self.traced_batch:
                raise ValueError(f"traced at batch {self.traced_batch}, asked for batch {batch}")
            return int

        def at(value: int) -> int:
            constant, per_clip = split_marker(value, base)
            return constant + per_clip * batch
        return at

    def allocator_events(self, batch: int) -> list[tuple]:
        """The traced allocations and frees at ``batch`` clips as a steady-state step sees them, for the CUDA
        allocator model (bench/measure/cuda_memory.py): what existed before the first op (weights, buffers, the
        batch), then the optimizer state (created in the first step, held ever after), then the step twice, with
        whatever the first left alive (gradients: the loop's ``zero_grad(set_to_none=True)``) freed in between,
        so the second step meets the cache the first left."""
        size = self.sizer(batch)
        first_op = self.tracker.checks[0][0] if self.tracker.checks else len(self.tracker.log)
        events = [("alloc", id(w), size(b)) for u, w, _, b in self.tracker.log[:first_op] if u == _UpdateType.ADD]
        events += [("alloc", key, size(b)) for key, b in self.state.items()]
        before = {event[1] for event in events}
        for step in (1, 2):
            alive = set()
            for u_type, winfo, _, traced in self.tracker.log[first_op:]:
                key = (step, id(winfo)) if id(winfo) not in before else id(winfo)
                if u_type == _UpdateType.ADD and id(winfo) not in self.state:
                    events.append(("alloc", key, size(traced)))
                    alive.add(key)
                elif u_type == _UpdateType.DEL:
                    events.append(("free", key))
                    alive.discard(key)
                elif u_type == _UpdateType.SIZE and key in alive:
                    events += [("free", key), ("alloc", key, size(traced))]
            events += [("free", key) for key in alive]
        return events
    def cost(self, batch: int) -> dict:
        """The record of one run at ``batch`` clips: FLOPs as ``profile.flops_record`` gives them, the steady-state
        peak by category and phase, the saved activations and the memory by module."""
        size = self.sizer(batch)
        memory = self._peak_breakdown(size, batch)
        saved = _saved_summary(self.saved, size)
        unread = sum(size(v) for v in self.unread)
        return {**self._flops(batch), **memory, "unread_bytes": unread,
                "peak_bytes_predicted_cpu_profiler": memory["peak_bytes_predicted"] - unread, **saved,
                "memory_by_module": self._memory_by_module(saved, batch), "trace_time_s": self.trace_time_s}

    def _flops(self, batch: int) -> dict:
        flops = self.sizer(batch, FLOP_BASE)
        forward, backward = flops(self.flops["fwd_flops_batch"]), flops(self.flops["bwd_flops_batch"])
        by_module = {name: flops(v) for name, v in self.flops["fwd_flops_by_module"].items()}
        return {**self.flops, "fwd_flops_by_module": dict(sorted(by_module.items(), key=lambda kv: -kv[1])),
                "fwd_flops_per_clip": forward / batch, "fwd_flops_batch": forward, "bwd_flops_batch": backward,
                "train_step_flops": forward + backward, "flops_batch_size": batch}

    def peak_bytes(self, batch: int) -> int:
        """The steady-state peak of live tensor bytes at ``batch`` clips (array maxima, no breakdown)."""
        constant, per_clip = self._checks[:2]
        if self.traced_batch is not None:
            self.sizer(batch)  # refuses another batch size
        return int((constant + per_clip * batch).max())

    @functools.cached_property
    def _checks(self) -> tuple:
        """Every check point's total as ``constant + per_clip * batch`` (numpy arrays of each part; the totals are
        sums of sizes, so each part is the total of that part of the sizes), with the optimizer-state bytes not yet
        created there split alike, the log positions and phases, and per (module, phase) the check points where the
        module runs: peaks at any batch size are then array maxima."""
        parts = [lambda v: v, lambda v: 0] if self.traced_batch is not None else \
            [lambda v: split_marker(v)[0], lambda v: split_marker(v)[1]]
        series = []
        for part in parts:
            state_bytes = sum(part(v) for v in self.state.values())
            series.append(list(self.tracker.totals(part, set(self.state), state_bytes)))
        constant, per_clip = (np.array([c[0] for c in checks], dtype=np.int64) for checks in series)
        missing = [np.array([c[2] for c in checks], dtype=np.int64) for checks in series]
        first = series[0]
        where: dict[tuple[str, str], list[int]] = {}
        for index, (_, _, _, phase, running) in enumerate(first):
            for fqn in running:
                name = _owner(fqn.partition(".")[2], self.depth)  # the root's class name dropped
                if name and phase in ("forward", "backward"):
                    where.setdefault((name, phase), []).append(index)
        return (constant, per_clip, missing, [c[1] for c in first], [c[3] for c in first],
                {key: np.unique(indices) for key, indices in where.items()})

    def _steady_peak(self, batch: int) -> tuple:
        """(bytes, log position, optimizer-state bytes not yet created there, phase) of the steady-state peak."""
        constant, per_clip, missing, positions, phases, _ = self._checks
        if not len(constant):
            return 0, 0, 0, "before the step"
        index = int(np.argmax(constant + per_clip * batch))  # the first of equal maxima, as the step reaches it
        return (int(constant[index] + per_clip[index] * batch), positions[index],
                int(missing[0][index] + missing[1][index] * batch), phases[index])

    def _peak_breakdown(self, size, batch: int) -> dict:
        """The steady-state peak, the phase it falls in, and what is alive then by category."""
        peak, position, missing, phase = self._steady_peak(batch)
        by_category = dict.fromkeys(CATEGORIES, 0)
        raw: dict[str, int] = {_MemRefType.OPT.value: missing}
        for winfo, reftype, nbytes in self.tracker.alive_at(position, size):
            by_category[_category(winfo, reftype, saved=self.tracker.saved, state=set(self.state))] += nbytes
            raw[reftype.value] = raw.get(reftype.value, 0) + nbytes
        by_category["optimizer_state"] += missing  # the state a later step holds from its start
        if sum(by_category.values()) != peak:  # the replay must reproduce the running total
            raise RuntimeError(f"peak replay: {sum(by_category.values())} bytes alive, running total {peak}")
        return {"peak_bytes_predicted": peak, "peak_phase": phase, "peak_by_category_bytes": by_category,
                "peak_by_memtracker_category_bytes": raw,
                "optimizer_state_total_bytes": sum(size(v) for v in self.state.values()),
                "memory_convention": MEMORY_CONVENTION}

    def _memory_by_module(self, saved: dict, batch: int) -> dict:
        """Per module of at most ``depth`` name parts: its weights, gradients and optimizer state (bytes of its own
        parameters), the activations it saved for backward, and the highest total memory while it ran forward and
        backward (the optimizer state a later step holds included)."""
        rows = {name: dict(own) for name, own in self.by_module.items()}
        blank = dict.fromkeys(("weights_bytes", "gradients_bytes", "optimizer_state_bytes"), 0)
        for module, nbytes in saved["activation_saved_bytes_by_module"].items():
            rows.setdefault(module, dict(blank))["activations_saved_bytes"] = nbytes
        constant, per_clip, _, _, _, where = self._checks
        totals = constant + per_clip * batch
        for (name, phase), indices in where.items():
            rows.setdefault(name, dict(blank))[f"peak_{phase}_bytes"] = int(totals[indices].max())
        for row in rows.values():
            for key in ("activations_saved_bytes", "peak_forward_bytes", "peak_backward_bytes"):
                row.setdefault(key, 0)
        return dict(sorted(rows.items(), key=lambda kv: -(kv[1]["weights_bytes"] + kv[1]["activations_saved_bytes"])))


def _saved_summary(charged: dict, size) -> dict:
    """``SavedActivations.summary`` at a batch size."""
    by_module: dict[str, int] = {}
    for module_name, nbytes in charged.values():
        by_module[module_name] = by_module.get(module_name, 0) + size(nbytes)
    return {"activation_saved_bytes": sum(by_module.values()),
            "activation_saved_bytes_by_module": dict(sorted(by_module.items(), key=lambda kv: -kv[1]))}


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def _state_infos(tracker: _PeakTracker, optimizer: torch.optim.Optimizer) -> dict[int, int]:
    """id -> bytes of the storage infos of the optimizer's state (created in the traced step)."""
    entries = (tracker._WINFO.get(t.untyped_storage()) for t in _state_tensors(optimizer))
    return {id(entry[0]): entry[0].mem_consumed for entry in entries if entry is not None}


def _unread_sizes(tensors: list[torch.Tensor], touched: set[int]) -> list[int]:
    """Bytes of each storage among ``tensors`` (all alive through the step) that no op of the step read: weights of
    modules the step never runs, say. They are memory the process holds, but the CPU profiler's timeline counts a
    tensor older than the step only once an op uses it, so the measured CPU peak leaves them out."""
    unread = {storage_key(t): t.untyped_storage().nbytes() for t in tensors if storage_key(t) not in touched}
    return list(unread.values())


def _owner(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def _own_bytes_by_module(model: nn.Module, optimizer, *, depth: int) -> dict:
    """Per module of at most ``depth`` name parts: the bytes of its own parameters and buffers, of their gradients
    and of their optimizer state (none of them depends on the batch)."""
    rows: dict[str, dict] = {}
    seen = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        entry = rows.setdefault(_owner(name, depth), {"weights_bytes": 0, "gradients_bytes": 0,
                                                      "optimizer_state_bytes": 0})
        nbytes = tensor.untyped_storage().nbytes()
        entry["weights_bytes"] += nbytes
        if isinstance(tensor, nn.Parameter) and tensor.requires_grad:
            entry["gradients_bytes"] += nbytes
            entry["optimizer_state_bytes"] += sum(v.untyped_storage().nbytes()
                                                  for v in optimizer.state.get(tensor, {}).values()
                                                  if isinstance(v, torch.Tensor))
    return rows
