"""``run_bench.py --plan``: the cost of every run of a sweep, predicted without training (bench/measure/plan.py).

Each run is built by the runner's own code -- ``build_base_model``, ``with_strategy``, the numerics switches of
``run_one`` and ``make_optimizer`` -- and one training step is traced on fake tensors: nothing of the step is
allocated and nothing computed. The base model (CLIP visual tower, cached text features, fusion, head) is built
once per model setting for real (open_clip moves its modules with ``.to``, which fake parameters refuse), and each
run gets a fresh fake copy of it. The trace follows the CPU's op sequence, that of the measured CPU reference runs
(``python -m bench.tools.plan_check`` compares the two).

Output: a table (tabulate) and ``<out>/plan/plan.json`` (``PLAN_SCHEMA_VERSION``; units in key names): per run its
setting, parameter counts, FLOPs (``fwd_flops_per_clip``, ``train_step_flops``, by module), the predicted peak
(``peak_bytes_predicted``: every live tensor; ``peak_bytes_predicted_cpu_profiler``: as the CPU profiler counts it)
by category and by module, and the activations saved for backward by module.
"""
from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tabulate import tabulate
from torch import nn
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode

from bench.config import RunConfig
from bench.measure import cuda_memory, plan
from bench.measure.profile import FLOPS_CONVENTION, count_parameters
from bench.numerics import half_frozen_parameters, numerics_for, relayout_attention_inputs, setting_record
from bench.records import FAILED_SUFFIX, OK, read_result, write_json_atomic
from bench.training.run import build_base_model, seed_everything, with_strategy
from bench.training.train import make_optimizer
from models.backbone import image_size_of
from models.loss import WeightedBCE
from models.text import encode_sentences

if TYPE_CHECKING:
    from bench.runner.sweep import RunSpec

PLAN_FOLDER = "plan"  # under --out: the run records' folder holds only run records (reports read every *.json)
CURVE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # the plan's peak-vs-batch curve (one trace gives them all)
DEVICE = torch.device("cpu")


class Planner:
    """The models of a plan, each built once: real base models (before any strategy) per model setting, the strategy
    applied once per strategy setting, and each run's model set up as ``run_one`` sets it up (numerics switches,
    head prior) once per setting but the batch size, so that runs differing in batch only share it (a traced step
    leaves only gradients behind, dropped after it).

    One ``FakeTensorMode`` serves every run of a plan: its cache of op results by input shapes then serves the many
    runs that repeat a setting's shapes."""

    def __init__(self, configs: list[RunConfig] = ()) -> None:
        """``configs``: the runs to come, if known; the last setting of a strategy then takes its model without a
        copy."""
        self._uses = Counter(self._strategy_key(cfg) for cfg in {self._setting_key(c): c for c in configs}.values())
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)  # the real base is copied in
        self._built: dict[str, nn.Module] = {}
        self._adapted: dict[str, tuple[nn.Module, set[str], set[str]]] = {}
        self._prepared: dict[str, Prepared] = {}
        self._traces: dict[str, plan.StepTrace] = {}

    def trace(self, cfg: RunConfig) -> plan.StepTrace:
        """The run's step traced once per setting but the batch size, at the marker batch (``plan.MARKER_BATCH``:
        one trace gives every batch size); where that trace fails, at the run's own batch size."""
        key = self._setting_key(cfg)
        if key not in self._traces:
            try:
                self._traces[key] = self._trace(cfg, plan.MARKER_BATCH)
            except Exception:  # noqa: BLE001 -- the trace at the run's batch below raises a genuine error again
                key = repr((key, cfg.train.batch_size))
                if key not in self._traces:
                    self._traces[key] = self._trace(cfg, cfg.train.batch_size)
        return self._traces[key]

    def _trace(self, cfg: RunConfig, batch: int) -> plan.StepTrace:
        ready = self.prepared(cfg)
        model = ready.model
        try:
            with self.mode:
                numerics = numerics_for(cfg.train, DEVICE)
                optimizer = make_optimizer(model, cfg.train, ready.backbone_ids)
                size = image_size_of(model.backbone)
                video = torch.zeros(batch, cfg.data.frames, 3, size, size)  # (B, T, 3, H, W), as loaders give it
                target = torch.zeros(batch, model.num_attributes)  # (B, A)
                return plan.trace_step(model, video, target, loss_fn=plan_loss(model), optimizer=optimizer,
                                       numerics=numerics)
        finally:
            for param in model.parameters():  # the next trace of this model starts as a fresh one does
                param.grad = None

    @classmethod
    def _setting_key(cls, cfg: RunConfig) -> str:
        train = cfg.train
        return repr((cls._strategy_key(cfg), train.precision, train.half_frozen_backbone, train.sdpa_backend,
                     train.head_prior_init))

    def base(self, cfg: RunConfig) -> nn.Module:
        key = repr((cfg.data.dataset, cfg.data.frames, cfg.model))  # what build_base_model reads
        if key not in self._built:
            seed_everything(cfg.train.seed)
            self._built[key] = build_base_model(cfg, encode=text_features_shape_only)
        return self._built[key]

    def prepared(self, cfg: RunConfig) -> Prepared:
        """The run's model, set up as ``run_one`` sets it up before its optimizer, shared by runs that differ in
        batch size only."""
        train, key = cfg.train, self._setting_key(cfg)
        if key not in self._prepared:
            model, base_ids, backbone_ids = self.with_strategy(cfg)
            with self.mode:
                numerics = numerics_for(train, DEVICE)  # as run_one sets the run up, in its order
                half_cast = half_frozen_parameters(model.backbone, numerics.dtype) \
                    if train.half_frozen_backbone else 0
                relaid = relayout_attention_inputs(model, numerics)
                if train.head_prior_init:
                    model.head.init_prior(plan_loss(model).constant_optimum_logits())
            self._prepared[key] = Prepared(model, base_ids, backbone_ids, half_cast, relaid)
        return self._prepared[key]

    @staticmethod
    def _strategy_key(cfg: RunConfig) -> str:
        return repr((cfg.data.dataset, cfg.data.frames, cfg.model, cfg.strategy, cfg.train.train_head))

    def with_strategy(self, cfg: RunConfig) -> tuple[nn.Module, set[int], set[int]]:
        """A fresh fake copy of the run's model with its strategy, and ``with_strategy``'s parameter ids for it."""
        key = self._strategy_key(cfg)
        if key not in self._adapted:
            model, base_ids, backbone_ids = self._apply(cfg)
            names = {id(p): name for name, p in model.named_parameters()}
            self._adapted[key] = (model, *({names[i] for i in ids if i in names} for ids in (base_ids, backbone_ids)))
        model, base_names, backbone_names = self._adapted[key]
        self._uses[key] -= 1
        if self._uses[key] == 0:  # no other setting needs it
            fresh = self._adapted.pop(key)[0]
        else:
            with self.mode:
                fresh = _copy(model, torch.empty_like)
        params = dict(fresh.named_parameters())
        return fresh, {id(params[n]) for n in base_names}, {id(params[n]) for n in backbone_names}

    def _apply(self, cfg: RunConfig) -> tuple[nn.Module, set[int], set[int]]:
        """The strategy applied to a fake copy of the base where its initialisation allows; one that reads values
        while initialising (e.g. ``trunc_normal_``'s resampling loop) or moves modules with ``.to`` (peft; fake
        parameters refuse it) is applied to a real copy that is then made fake."""
        base = self.base(cfg)
        with self.mode:
            try:
                return with_strategy(_copy(base, torch.empty_like), cfg)
            except Exception:  # noqa: BLE001 -- the real path below raises the error if it is the strategy's own
                pass
        real, base_ids, backbone_ids = with_strategy(copy.deepcopy(base), cfg)
        names = {id(p): name for name, p in real.named_parameters()}
        with FakeCopyMode(self.mode):
            model = copy.deepcopy(real)
        fakes = dict(model.named_parameters())
        return (model, *({id(fakes[names[i]]) for i in ids if i in names} for ids in (base_ids, backbone_ids)))


@dataclass
class Prepared:
    """A run's fake model as ``run_one`` sets it up, with ``with_strategy``'s parameter ids and the numerics
    switches' counts (parameters cast to half, attention modules re-laid out) that records keep."""

    model: nn.Module
    base_ids: set[int]
    backbone_ids: set[int]
    half_cast: int
    relaid: int


def text_features_shape_only(clip_model: nn.Module, tokenizer, sentences: list[str]) -> torch.Tensor:
    """``encode_sentences`` on fake tensors: the cached text features' shape and dtype without the text tower's
    compute (seconds on CPU at ViT-B/16), as zeros; their values change no cost."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        features = encode_sentences(clip_model, tokenizer, sentences)
    return torch.zeros(features.shape, dtype=features.dtype)


def plan_loss(model: nn.Module) -> WeightedBCE:
    """The run's loss at uniform positive rates: the rates change its values, not its cost."""
    return WeightedBCE(torch.full((model.num_attributes,), 0.5))


def _copy(model: nn.Module, make) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are ``make(tensor)`` (same shape and dtype; parameters
    stay parameters with their ``requires_grad``; a tensor registered twice stays one tensor)."""
    memo: dict[int, torch.Tensor] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in memo:
            new = make(tensor.detach())
            memo[id(tensor)] = nn.Parameter(new, requires_grad=tensor.requires_grad) \
                if isinstance(tensor, nn.Parameter) else new
    return copy.deepcopy(model, memo)


def plan_run(spec: RunSpec, planner: Planner) -> dict:
    """One run's predicted cost: its setting's traced step (``Planner.trace``) at the run's batch size."""
    return plan_config(spec.run_id, spec.config, planner)


def plan_config(run_id: str, cfg: RunConfig, planner: Planner) -> dict:
    ready, trace = planner.prepared(cfg), planner.trace(cfg)
    cost = trace.cost(cfg.train.batch_size)
    return {"id": run_id, "strategy": cfg.strategy.name, "family": cfg.strategy.registered,
            "config_digest": cfg.digest(), "setting": setting_of(cfg, image_size=image_size_of(ready.model.backbone)),
            "strategy_params": dict(cfg.strategy.params), **count_parameters(ready.model, ready.base_ids), **cost,
            "traced_batch": trace.traced_batch or "marker",
            "peak_bytes_by_batch": {str(b): trace.peak_bytes(b) for b in CURVE_BATCHES} if trace.traced_batch is None
            else {},
            **setting_record(cfg.train, DEVICE, half_cast_params=ready.half_cast,
                                       relaid_attentions=ready.relaid),
            "traced_device": str(DEVICE)}


def setting_of(cfg: RunConfig, *, image_size: int) -> dict:
    return {"dataset": cfg.data.dataset, "backbone": cfg.model.backbone, "image_size": image_size,
            "frames": cfg.data.frames, "batch_size": cfg.train.batch_size, "precision": cfg.train.precision,
            "half_frozen_backbone": cfg.train.half_frozen_backbone, "sdpa_backend": cfg.train.sdpa_backend,
            "world_size": cfg.train.world_size, "compile": cfg.train.compile}


def plan_runs(specs: list[RunSpec], gpus: list[cuda_memory.Gpu] = ()) -> list[dict]:
    planner = Planner([spec.config for spec in specs])
    rows = []
    for spec in specs:
        row = plan_run(spec, planner)
        if gpus:
            row["gpus"] = gpu_predictions(planner.trace(spec.config), spec.config, gpus,
                                          train_step_flops=row["train_step_flops"])
        rows.append(row)
    return rows


MAX_PLANNED_BATCH = 2 ** 20


def gpu_predictions(trace: plan.StepTrace, cfg: RunConfig, gpus: list[cuda_memory.Gpu], *,
                    train_step_flops: int) -> dict:
    """Per GPU: the predicted ``memory_reserved`` peak and device total (plus the CUDA context) at the run's batch,
    the largest batch whose device total fits the GPU's memory, and (for a GPU of known peak) a compute-bound step
    time from the run's planned ``train_step_flops``. All predictions (bench/measure/cuda_memory.py says how)."""
    events, out = trace.allocator_events(cfg.train.batch_size), {}
    for gpu in gpus:
        at_batch = cuda_memory.replay(events, workspaces=gpu.workspace_bytes)
        row = {**at_batch, "cuda_context_bytes_assumed": gpu.context_mib * MIB,
               "device_bytes_predicted": at_batch["cuda_peak_reserved_bytes"] + gpu.context_mib * MIB,
               "gpu_memory_bytes": int(gpu.memory_gib * cuda_memory.GIB),
               "max_batch_fits": largest_batch(trace, gpu) if trace.traced_batch is None else None}
        if gpu.bf16_tflops:
            row["step_time_ms_predicted"] = 1e3 * cuda_memory.step_seconds(
                train_step_flops, gpu, precision=cfg.train.precision, efficiency=GPU_EFFICIENCY)
            row["step_time_efficiency_assumed"] = GPU_EFFICIENCY
        out[gpu.name] = row
    return out


GPU_EFFICIENCY = 0.4  # share of the dense peak a training step reaches: an assumption, stated with every estimate


def largest_batch(trace: plan.StepTrace, gpu: cuda_memory.Gpu) -> int:
    """The largest batch whose predicted device total (allocator replay + context) fits ``gpu``: the live-bytes peak,
    which is exact at every batch in one array maximum, brackets it, and the replay decides near the edge."""
    budget = int(gpu.memory_gib * cuda_memory.GIB) - gpu.context_mib * MIB

    def fits(batch: int) -> bool:
        return cuda_peaks(trace, batch, gpu)["cuda_peak_reserved_bytes"] <= budget

    high = 1
    while high < MAX_PLANNED_BATCH and trace.peak_bytes(high * 2) <= budget:  # live bytes never exceed reserved
        high *= 2
    low = high
    while low > 0 and not fits(low):  # the segments' overhead: step down by an eighth until the replay fits
        low = low - max(1, low // 8)
    if low <= 0:
        return 0
    step = max(1, low // 8)
    while step >= 1:  # then up again in smaller steps while it still fits
        if low + step <= 2 * high and trace.peak_bytes(low + step) <= budget and fits(low + step):
            low += step
        else:
            step //= 2
    return low


MIB = 2 ** 20


def plan_table(rows: list[dict]) -> str:
    """One line per run: work (GFLOPs = 1e9 FLOPs, FLOP = 2 x MAC) and the predicted peak by category (MiB)."""
    headers = ["strategy", "batch", "precision", "trainable params", "fwd GFLOPs/clip", "step GFLOPs",
               "peak MiB", *(c.replace("_", " ") for c in plan.CATEGORIES), "peak in"]
    lines = []
    for r in rows:
        s = r["setting"]
        prec = s["precision"] + ("+half-frozen" if s["half_frozen_backbone"] else "")
        lines.append([r["strategy"], s["batch_size"], prec, r["params_trainable"], r["fwd_flops_per_clip"] / 1e9,
                      r["train_step_flops"] / 1e9, r["peak_bytes_predicted"] / MIB,
                      *(r["peak_by_category_bytes"][c] / MIB for c in plan.CATEGORIES), r["peak_phase"]])
    return tabulate(lines, headers=headers, tablefmt="github", floatfmt=".1f", intfmt=",")


def plan_document(rows: list[dict], *, preset: str, wall_time_s: float) -> dict:
    return {"schema_version": plan.PLAN_SCHEMA_VERSION, "kind": "cost-plan", "preset": preset,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "flops_convention": FLOPS_CONVENTION,
            "memory_convention": plan.MEMORY_CONVENTION, "wall_time_s": wall_time_s, "runs": rows}


def gpu_table(rows: list[dict]) -> str:
    """One line per run and GPU: predicted reserved peak, device total, whether it fits, the largest batch, time."""
    headers = ["strategy", "batch", "precision", "GPU", "reserved MiB", "+ context MiB", "fits", "max batch",
               "step ms (est.)"]
    lines = []
    for r in rows:
        for name, g in r.get("gpus", {}).items():
            lines.append([r["strategy"], r["setting"]["batch_size"], r["setting"]["precision"], name,
                          g["cuda_peak_reserved_bytes"] / MIB, g["device_bytes_predicted"] / MIB,
                          "yes" if g["device_bytes_predicted"] <= g["gpu_memory_bytes"] else "no",
                          g["max_batch_fits"],
                          f"{g['step_time_ms_predicted']:.3g}" if "step_time_ms_predicted" in g else ""])
    return tabulate(lines, headers=headers, tablefmt="github", floatfmt=".1f", intfmt=",")


def plan_command(specs: list[RunSpec], *, out: Path, preset: str, gpus: list = ()) -> int:
    """Plan every run, print the table(s), write ``<out>/plan/plan.json``."""
    start = time.perf_counter()
    rows = plan_runs(specs, list(gpus))
    wall = time.perf_counter() - start
    print(plan_table(rows))
    if gpus:
        print(f"\nCUDA predictions (caching allocator replayed over the traced step; CUDA context assumed; step time "
              f"at {GPU_EFFICIENCY:.0%} of the dense peak; docs/precision-and-cost.md):")
        print(gpu_table(rows))
    path = Path(out) / PLAN_FOLDER / "plan.json"
    write_json_atomic(path, plan_document(rows, preset=preset, wall_time_s=wall))
    print(f"cost plan of {len(rows)} run(s) in {wall:.1f} s (no training; FLOPs = 2 x MACs, memory = live tensor "
          f"bytes of one CPU step): {path}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Plan against measurement
# ---------------------------------------------------------------------------------------------------------------------

FLOP_KEYS = ("fwd_flops_per_clip", "fwd_flops_batch", "bwd_flops_batch", "train_step_flops")
MEMORY_TOLERANCE_PCT = 3.0


CPU_PEAK, CUDA_PEAK = "cpu_profiler_live_tensors", "cuda_max_allocated"
GPU_TOLERANCE_PCT = 10.0  # the goal for the CUDA model against a GPU's memory_reserved


def measured_records(folders: list[Path], strategies: set[str] | None = None, *, kinds: tuple[str, ...] = (CPU_PEAK,)
                     ) -> list[tuple[Path, dict]]:
    """Every finished run whose peak is of one of ``kinds`` in ``folders`` (each folder's ``*.json``, failed retries
    aside): CPU-profiler peaks, and with ``CUDA_PEAK`` the runs measured on a GPU."""
    found = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")):
            if path.name.endswith(FAILED_SUFFIX):
                continue
            record = read_result(path)
            prof = record.get("profile") or {}
            if record["run"]["status"] == OK and prof.get("peak_mem_kind") in kinds \
                    and (strategies is None or record["run"]["strategy"] in strategies):
                found.append((path, record))
    return found


def flops_equal(planned: dict, measured: dict) -> bool:
    """Every FLOP figure of the plan equals the measured one (the plan counts with the measured runs' counter)."""
    return all(planned[k] == measured.get(k) for k in FLOP_KEYS)


def cuda_peaks(trace: plan.StepTrace, batch: int, gpu: cuda_memory.Gpu) -> dict:
    """The CUDA model's ``memory_allocated`` / ``memory_reserved`` peaks of a traced step at ``batch`` on ``gpu``."""
    return cuda_memory.replay(trace.allocator_events(batch), workspaces=gpu.workspace_bytes)


def _plan_vs_measured(planned: dict, measured: dict, *, source: str, predicted: int, actual: int) -> dict:
    """What every comparison row holds: the run, its setting, FLOPs and saved activations equal or not, the peak
    predicted and measured (in the measurement's convention) and the signed gap."""
    return {"source": source, "id": planned["id"], "strategy": planned["strategy"],
            "batch_size": planned["setting"]["batch_size"], "precision": planned["setting"]["precision"],
            "half_frozen_backbone": planned["setting"]["half_frozen_backbone"],
            "flops_equal": flops_equal(planned, measured),
            "train_step_flops_predicted": planned["train_step_flops"],
            "train_step_flops_measured": measured.get("train_step_flops"),
            "activation_saved_equal": planned["activation_saved_bytes"] == measured.get("activation_saved_bytes"),
            "peak_bytes_predicted": predicted, "peak_bytes_measured": actual,
            "peak_gap_pct": 100.0 * (predicted - actual) / actual, "unread_bytes": planned["unread_bytes"],
            "trace_time_s": planned["trace_time_s"]}


def compare_row(planned: dict, measured: dict, *, source: str) -> dict:
    """Plan vs measurement of one run: FLOPs must be equal; memory is compared as the CPU profiler sees it."""
    return {**_plan_vs_measured(planned, measured, source=source,
                                predicted=planned["peak_bytes_predicted_cpu_profiler"],
                                actual=measured["peak_mem_bytes"]),
            "peak_by_category_bytes_predicted": planned["peak_by_category_bytes"],
            "peak_by_category_bytes_measured": measured.get("peak_mem_by_category_bytes")}


def compare_cuda_row(planned: dict, trace: plan.StepTrace, measured: dict, *, gpu: cuda_memory.Gpu,
                     source: str) -> dict:
    """Plan vs a GPU measurement: FLOPs equal, and the CUDA model's ``memory_reserved`` and ``memory_allocated``
    peaks against the run's ``torch.cuda.max_memory_reserved`` / ``max_memory_allocated``."""
    cuda = cuda_peaks(trace, planned["setting"]["batch_size"], gpu)
    allocated = measured["cuda_max_allocated_bytes"]
    return {**_plan_vs_measured(planned, measured, source=source, predicted=cuda["cuda_peak_reserved_bytes"],
                                actual=measured["cuda_max_reserved_bytes"]),
            "gpu_model": gpu.name, "allocated_bytes_predicted": cuda["cuda_peak_allocated_bytes"],
            "allocated_bytes_measured": allocated,
            "allocated_gap_pct": 100.0 * (cuda["cuda_peak_allocated_bytes"] - allocated) / allocated}


def compare_with_records(folders: list[Path], *, strategies: set[str] | None = None, on_row=None,
                         gpu: cuda_memory.Gpu | None = None) -> list[dict]:
    """Plan each measured run from its own recorded config and compare (``compare_row``; with ``gpu``, the runs
    measured on a GPU too, by ``compare_cuda_row``); ``on_row(row)`` is called as each row is ready (a ViT-B/16
    plan takes seconds)."""
    records = measured_records(folders, strategies, kinds=(CPU_PEAK, CUDA_PEAK) if gpu else (CPU_PEAK,))
    planner, rows = Planner([RunConfig.from_dict(record["run"]["config"]) for _, record in records]), []
    for path, record in records:
        cfg = RunConfig.from_dict(record["run"]["config"])
        try:
            planned = plan_config(record["run"]["id"], cfg, planner)
        except Exception as error:  # noqa: BLE001 -- one run that cannot be planned is a row of the check, not its end
            rows.append({"source": str(path.parent), "id": record["run"]["id"], "strategy": cfg.strategy.name,
                         "error": f"{type(error).__name__}: {error}"[:300]})
        else:
            if record["profile"]["peak_mem_kind"] == CUDA_PEAK:
                rows.append(compare_cuda_row(planned, planner.trace(cfg), record["profile"], gpu=gpu,
                                             source=str(path.parent)))
            else:
                rows.append(compare_row(planned, record["profile"], source=str(path.parent)))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def comparison_table(rows: list[dict]) -> str:
    headers = ["source", "strategy", "batch", "precision", "FLOPs equal", "saved act. equal", "predicted MiB",
               "measured MiB", "gap %", "unread MiB"]
    lines = [[Path(r["source"]).name, r["strategy"], "error", r["error"]] if "error" in r else
             [Path(r["source"]).name, r["strategy"], r["batch_size"],
              r["precision"] + ("+half-frozen" if r["half_frozen_backbone"] else ""), r["flops_equal"],
              r["activation_saved_equal"], r["peak_bytes_predicted"] / MIB, r["peak_bytes_measured"] / MIB,
              f"{r['peak_gap_pct']:+.3f}", r["unread_bytes"] / MIB] for r in rows]
    return tabulate(lines, headers=headers, tablefmt="github", floatfmt=".1f", disable_numparse=[8])


# ---------------------------------------------------------------------------------------------------------------------
# The plan inside every measured record
# ---------------------------------------------------------------------------------------------------------------------

def prediction_beside(run_id: str, cfg: RunConfig, measured: dict) -> dict:
    """The plan of a run that has just measured itself, for its record (``profile.plan``): predicted FLOPs (equal or
    not to the measured) and peak memory in the measurement's own convention (CPU profiler live bytes, or on a GPU
    the CUDA model's ``memory_reserved`` against ``max_memory_reserved``), with the gap, so every sweep checks the
    planner. A plan that fails says why and leaves the run as it is."""
    start = time.perf_counter()
    try:
        planner = Planner([cfg])
        planned, trace = plan_config(run_id, cfg, planner), planner.trace(cfg)
        row = {"flops_equal": flops_equal(planned, measured),
               "train_step_flops_predicted": planned["train_step_flops"]}
        kind = measured.get("peak_mem_kind")
        if kind == CPU_PEAK:
            predicted, actual = planned["peak_bytes_predicted_cpu_profiler"], measured["peak_mem_bytes"]
        elif kind == CUDA_PEAK:
            gpu = cuda_memory.gpu_of_current_device()
            predicted = cuda_peaks(trace, cfg.train.batch_size, gpu)["cuda_peak_reserved_bytes"]
            actual = measured["cuda_max_reserved_bytes"]
        else:
            predicted = actual = None
        if predicted is not None and actual:
            row.update({"peak_kind": kind, "peak_bytes_predicted": predicted, "peak_bytes_measured": actual,
                        "peak_gap_pct": 100.0 * (predicted - actual) / actual})
    except Exception as error:  # noqa: BLE001 -- the planner failing is a finding about the planner, not the run
        row = {"error": f"{type(error).__name__}: {error}"[:300]}
    return {**row, "plan_time_s": time.perf_counter() - start}
