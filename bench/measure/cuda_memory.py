"""What a planned training step would hold on a GPU: PyTorch's CUDA caching allocator replayed over the traced
allocations, plus what lives outside the traced tensors (library workspaces, the CUDA context).

The cost plan (bench/measure/plan.py) logs every storage a traced step allocates and frees, in order. A GPU run does
not hold those bytes: it holds the caching allocator's *segments* (``torch.cuda.memory_reserved``), which this module
predicts by replaying the log through a model of that allocator (PyTorch's "CUDA memory management" notes and
``c10/cuda/CUDACachingAllocator.cpp``; every constant below is one of its defaults):

- a request is rounded up to a multiple of 512 bytes (``kMinBlockSize``);
- requests of at most 1 MiB (``kSmallSize``) are served from a pool of 2 MiB segments (``kSmallBuffer``), larger
  ones from a pool whose new segments are 20 MiB (``kLargeBuffer``) for requests under 10 MiB (``kMinLargeAlloc``)
  and otherwise the request rounded up to 2 MiB (``kRoundLarge``);
- a request takes the smallest cached free block of its pool that is large enough (best fit), split when the rest
  is at least 512 bytes (small pool) or more than 1 MiB (large pool); a freed block merges with free neighbours of
  its segment; segments are kept (no ``empty_cache``), so the reserved total only grows.

Outside the traced tensors: cuBLAS's workspace (``CUBLAS_WORKSPACE_CONFIG``'s default ``:4096:2:16:8`` = 2 x 4 MiB
+ 8 x 16 KiB = 8,519,680 bytes, the block memory snapshots show after a first matmul) and cuBLASLt's (1 MiB; 4 MiB
on Ampere cards of 24 GiB or more; 32 MiB on Hopper and later: PyTorch PR #120925 after NVIDIA's cuBLAS guide), both
taken from the caching allocator before the step, and the CUDA context, which is not in ``memory_reserved`` at all
and depends on the driver and the loaded kernels: an assumption, stated per GPU below, that the GPU validation
measures (``torch.cuda.mem_get_info`` around the first CUDA call).

The replay is of the CPU op sequence the plan traces: a GPU run picks other attention kernels (flash or
memory-efficient attention save a log-sum-exp per row instead of the attention matrix) and may keep other
temporaries, so these figures are predictions, labelled as such, until a GPU run measures them.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

MIB = 2 ** 20
GIB = 2 ** 30
MIN_BLOCK = 512            # kMinBlockSize: every request is rounded up to a multiple of it
SMALL_SIZE = 1 * MIB       # kSmallSize: largest request of the small pool
SMALL_BUFFER = 2 * MIB     # kSmallBuffer: a small-pool segment
LARGE_BUFFER = 20 * MIB    # kLargeBuffer: a large-pool segment for requests under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 * MIB  # kMinLargeAlloc
ROUND_LARGE = 2 * MIB      # kRoundLarge: larger segments are rounded up to it
CUBLAS_WORKSPACE = 2 * 4096 * 1024 + 8 * 16 * 1024  # CUBLAS_WORKSPACE_CONFIG default :4096:2:16:8


@dataclass(frozen=True)
class Gpu:
    """A GPU the plan can predict for. ``context_mib`` is an assumption (driver and kernels decide it), the other
    figures are the vendor's: memory, dense tensor-core / FP32 peak and memory bandwidth."""

    name: str
    memory_gib: float
    cublaslt_workspace_mib: int
    context_mib: int
    bf16_tflops: float
    fp32_tflops: float
    bandwidth_gbps: float

    @property
    def workspace_bytes(self) -> list[int]:
        return [CUBLAS_WORKSPACE, self.cublaslt_workspace_mib * MIB]


#: Dense (no sparsity) peaks from the vendors' data sheets; context sizes are the stated assumption.
GPUS = {gpu.name: gpu for gpu in (
    Gpu("rtx4090-24g", 24, 4, 400, 165.2, 82.6, 1008),
    Gpu("a100-40g", 40, 4, 450, 312, 19.5, 1555),
    Gpu("a100-80g", 80, 4, 450, 312, 19.5, 2039),
    Gpu("h100-80g", 80, 32, 500, 989, 67, 3350),
    Gpu("h200-141g", 141, 32, 500, 989, 67, 4800),
)}


GENERIC_CONTEXT_MIB = 500
GENERIC_CUBLASLT_MIB = 32  # the largest of the workspaces above: a capacity alone does not say which GPU it is


def parse_gpus(text: str) -> list[Gpu]:
    """``--gpu-memory``: comma-separated names of ``GPUS`` or capacities in GiB (e.g. ``24,40,h100-80g``); a bare
    capacity assumes the largest library workspace and the generic context, and has no peak for a step time."""
    gpus = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item in GPUS:
            gpus.append(GPUS[item])
            continue
        try:
            capacity = float(item)
        except ValueError:
            capacity = 0.0
        if capacity <= 0:
            raise ValueError(f"--gpu-memory: {item!r} is neither a capacity in GiB (e.g. 24) nor one of "
                             f"{', '.join(GPUS)}")
        gpus.append(Gpu(f"{item}GiB", capacity, GENERIC_CUBLASLT_MIB, GENERIC_CONTEXT_MIB, 0.0, 0.0, 0.0))
    if not gpus:
        raise ValueError("--gpu-memory: expected capacities in GiB or GPU names, got nothing")
    return gpus


def gpu_of_current_device() -> Gpu:
    """The current CUDA device as a ``Gpu``: its capacity, and the cuBLASLt workspace PyTorch picks by compute
    capability (Hopper and later 32 MiB, Ampere of 24 GiB or more 4 MiB, else 1 MiB); peaks unknown."""
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    gib = props.total_memory / GIB
    lt = 32 if props.major >= 9 else 4 if props.major == 8 and gib >= 24 else 1
    return Gpu(props.name, gib, lt, GENERIC_CONTEXT_MIB, 0.0, 0.0, 0.0)


def round_size(size: int) -> int:
    return max(MIN_BLOCK, -(-size // MIN_BLOCK) * MIN_BLOCK)


def segment_size(size: int) -> int:
    """Bytes of the new segment a rounded request opens when no cached block fits."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


class CachingAllocator:
    """The caching allocator's bookkeeping without memory: segments, blocks, best fit, splitting and merging.

    A block is ``[segment, offset, size]``; free blocks sit per pool in a list sorted by (size, segment, offset),
    which is the allocator's own order (smallest fit first, then lowest address), and by where they end, so a freed
    block finds its free neighbours on either side in one lookup."""

    def __init__(self) -> None:
        self.free = {True: [], False: []}  # small pool?, sorted (size, segment, offset)
        self.free_ends: dict[tuple[int, int], int] = {}  # (segment, end offset) of a free block -> its offset
        self.blocks: dict[tuple[int, int], int] = {}  # (segment, offset) -> size, free or not
        self.pool_of: list[bool] = []  # per segment: small pool?
        self.live: dict[object, tuple[int, int, int]] = {}  # key -> (segment, offset, size)
        self.reserved = self.allocated = 0
        self.peak_reserved = self.peak_allocated = 0

    def malloc(self, key: object, size: int) -> None:
        size = round_size(size)
        small = size <= SMALL_SIZE
        pool = self.free[small]
        index = bisect.bisect_left(pool, (size, -1, -1))
        if index < len(pool):
            block_size, segment, offset = pool[index]
            self._take_free(segment, offset)
        else:
            block_size, segment, offset = segment_size(size), len(self.pool_of), 0
            self.pool_of.append(small)
            self.blocks[(segment, offset)] = block_size
            self.reserved += block_size
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        rest = block_size - size
        if rest >= MIN_BLOCK if small else rest > SMALL_SIZE:
            self.blocks[(segment, offset)] = size
            self._add_free(segment, offset + size, rest)
            block_size = size
        self.live[key] = (segment, offset, block_size)
        self.allocated += block_size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def release(self, key: object) -> None:
        if key not in self.live:
            return
        segment, offset, size = self.live.pop(key)
        self.allocated -= size
        end = offset + size
        if self._is_free(segment, end):  # the next block is free: absorb it
            size += self._take_free(segment, end)
            del self.blocks[(segment, end)]
        before = self.free_ends.get((segment, offset))
        if before is not None:  # the previous block is free: it absorbs this one
            del self.blocks[(segment, offset)]
            size += self._take_free(segment, before)
            offset = before
        self._add_free(segment, offset, size)

    def _is_free(self, segment: int, offset: int) -> bool:
        size = self.blocks.get((segment, offset))
        return size is not None and self.free_ends.get((segment, offset + size)) == offset

    def _add_free(self, segment: int, offset: int, size: int) -> None:
        self.blocks[(segment, offset)] = size
        self.free_ends[(segment, offset + size)] = offset
        bisect.insort(self.free[self.pool_of[segment]], (size, segment, offset))

    def _take_free(self, segment: int, offset: int) -> int:
        """Take a free block out of the free lists (it stays a block of its segment); returns its size."""
        size = self.blocks[(segment, offset)]
        del self.free_ends[(segment, offset + size)]
        pool = self.free[self.pool_of[segment]]
        pool.pop(bisect.bisect_left(pool, (size, segment, offset)))
        return size


def replay(events, *, workspaces: list[int] = ()) -> dict:
    """Peaks of ``memory_allocated`` and ``memory_reserved`` over ``events``: ``("alloc", key, bytes)`` and
    ``("free", key)`` in program order, after the ``workspaces`` were taken (blocks held for the whole run)."""
    allocator = CachingAllocator()
    for index, size in enumerate(workspaces):
        allocator.malloc(("workspace", index), size)
    for event in events:
        if event[0] == "alloc":
            allocator.malloc(event[1], event[2])
        else:
            allocator.release(event[1])
    return {"cuda_peak_allocated_bytes": allocator.peak_allocated,
            "cuda_peak_reserved_bytes": allocator.peak_reserved}


def step_seconds(train_step_flops: float, gpu: Gpu, *, precision: str, efficiency: float) -> float:
    """A compute-bound estimate: the step's FLOPs at ``efficiency`` of the GPU's dense peak for the precision
    (bf16 / fp16 on tensor cores, fp32 on the FP32 units). A prediction, not a measurement."""
    peak = gpu.fp32_tflops if precision == "fp32" else gpu.bf16_tflops
    return train_step_flops / (peak * 1e12 * efficiency)
