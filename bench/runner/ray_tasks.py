"""Ray (``--launcher ray [--ray-address ADDR]``; extra ``[ray]``): one Ray task per pending run.

Each task asks for one GPU (or ``--ray-gpus-per-run``; Ray sets its ``CUDA_VISIBLE_DEVICES``) or, on a cluster without
GPUs, ``--ray-cpus-per-run`` CPUs, and runs its run in a worker process of its own, in a scratch folder of its node,
exactly as the serial sweep does. The record travels back to the driver, which writes it into ``--out`` with
``bench.records.settle`` (atomic, never a failure over a good result): no shared filesystem is needed. Tasks have
``max_retries=0`` (a benchmark run is never silently repeated); a task whose Ray worker died is recorded as a failed
run. The task itself is ``boot.in_checkout`` sent by value, so a Ray worker imports the project from the driver's
checkout (``ROOT``) whatever its working directory or installed copies would offer; nodes of another machine need a
checkout at that path, at the same commit (each record names its commit).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.config import ConfigError, RunConfig
from bench.records import settle
from bench.runner import boot
from bench.runner.placement import Slot
from bench.runner.sweep import ROOT, Launcher, Progress, RunSpec, attempt_spec, failure_record

RUN_ON_NODE = "bench.runner.ray_tasks:run_on_node"


def run_on_node(config: dict, run_id: str, threads: int | None) -> dict:
    """Inside a Ray task: run one spec in a worker process of its own; return its record."""
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()]
    slot = Slot(index=int(gpus[0]) if gpus and gpus[0].isdigit() else None, threads=threads, launcher="ray")
    spec = RunSpec(run_id, RunConfig.from_dict(config))
    with tempfile.TemporaryDirectory(prefix="vpar-bench-ray-") as scratch:
        return attempt_spec(spec, Path(scratch), slot)


def _connect(address: str | None) -> None:
    import ray

    if not ray.is_initialized():  # a caller (or a test) may have started Ray with its own resources
        python_path = boot.python_path(os.environ, root=str(ROOT))
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": python_path}} if address is None else None,
                 log_to_driver=False)


def _task(resources: dict):
    """The Ray task: ``boot.in_checkout(ROOT, run_on_node, ...)``, its module pickled by value so that the Ray worker
    looks nothing of the project up before the driver's checkout is first on its ``sys.path``."""
    import ray

    ray.cloudpickle.register_pickle_by_value(boot)
    return ray.remote(max_retries=0, **resources)(boot.in_checkout)


def _resources(gpus_per_run: float | None, cpus_per_run: int | None, ranks: int = 1,
               memory_gb: float | None = None) -> dict:
    """What each task asks for: by default one GPU (where the cluster has GPUs) and one CPU per torchrun rank
    (``--nproc-per-node``), so Ray reserves what the run will use; refuses requests the cluster can never meet (such
    a task would wait forever) and GPU runs with fewer GPUs than ranks (a rank without a device fails)."""
    import ray

    available = ray.cluster_resources()
    gpus = gpus_per_run if gpus_per_run is not None else (float(ranks) if available.get("GPU", 0) >= 1 else 0.0)
    cpus = cpus_per_run or ranks
    if 0 < gpus < ranks:
        raise ConfigError(f"--ray-gpus-per-run {gpus:g}: fewer than the {ranks} ranks of --nproc-per-node {ranks}, "
                          f"each of which needs a GPU of its own; ask for {ranks}, or 0 to run the ranks on CPUs")
    if gpus > available.get("GPU", 0) or cpus > available.get("CPU", 0):
        raise ConfigError(f"--ray-gpus-per-run {gpus} / --ray-cpus-per-run {cpus}: the Ray cluster has "
                          f"{available.get('GPU', 0):g} GPU(s) and {available.get('CPU', 0):g} CPU(s)")
    memory = {} if memory_gb is None else {"memory": int(memory_gb * 2**30)}  # Ray counts memory in bytes
    if memory and memory["memory"] > available.get("memory", float("inf")):
        raise ConfigError(f"--ray-memory-gb-per-run {memory_gb:g}: the Ray cluster has "
                          f"{available['memory'] / 2**30:.1f} GB of memory")
    return {"num_gpus": gpus, "num_cpus": cpus, **memory}


def ray_launcher(*, address: str | None = None, gpus_per_run: float | None = None, cpus_per_run: int | None = None,
                 threads: int | None = None, ranks: int = 1, memory_gb: float | None = None) -> Launcher:
    def launch(pending: list[RunSpec], out_dir: Path, progress: Progress) -> dict[str, dict]:
        import ray

        _connect(address)
        resources = _resources(gpus_per_run, cpus_per_run, ranks, memory_gb)
        task = _task(resources)
        cpu_threads = threads or (None if resources["num_gpus"] else resources["num_cpus"])
        waiting = {task.remote(str(ROOT), RUN_ON_NODE, spec.config.to_dict(), spec.run_id, cpu_threads): spec
                   for spec in pending}
        for spec in pending:
            progress.say(spec, f"submitted as a Ray task ({resources['num_gpus']:g} GPU, {resources['num_cpus']} CPU)")
        records = {}
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            spec = waiting.pop(done[0])
            records[spec.run_id] = settle(_result(done[0], spec), out_dir / f"{spec.run_id}.json")
            progress.finished(spec, records[spec.run_id])
        return records

    return launch


def _result(ref, spec: RunSpec) -> dict:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as error:  # the Ray worker died or the task could not run
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return failure_record(spec, f"ray task: {type(error).__name__}: {first}"[:500])

