"""Where a figure was measured: library versions, CPU and GPU, and the project's code (git commit and a digest of the
source files), as every result record and gate baseline states them (a figure is only comparable with one measured on
the same code, software and hardware)."""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project folder, above bench/measure/
LIBRARIES = ("torchvision", "open_clip_torch", "peft", "numpy", "pandas", "safetensors")


def git_state() -> tuple[str | None, bool | None]:
    """Commit hash and dirty flag of the project checkout (None where git is unavailable)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


# The files that decide a run's figures: the harness, strategies, model and data code, the CLI, experiment configs and
# model configs. Results, reports, tests and docs are not among them, so writing a result never changes the digest.
CODE_COVERS = ("bench/**/*.py", "strategies/**/*.py", "models/**/*.py", "data/**/*.py", "run_bench.py",
               "experiments/**/*.json", "models/configs/*.json")


def covered_files(root: Path = ROOT) -> list[str]:
    """The files ``CODE_COVERS`` names that are present under ``root``, as sorted POSIX paths relative to it. Read
    from disk, not from git: the digest is the same in a checkout, an unpacked archive or a container without git, and
    an uncommitted edit (the usual way of trying a change) counts."""
    found = {path.relative_to(root).as_posix() for pattern in CODE_COVERS for path in root.glob(pattern)
             if path.is_file()}
    return sorted(found)


def compute_source_digest(root: Path = ROOT) -> str:
    """SHA-256 over (path, SHA-256 of the bytes) of every covered file in sorted path order: a changed, added,
    removed or renamed source file changes it."""
    digest = hashlib.sha256()
    for name in covered_files(root):
        digest.update(name.encode("utf-8") + b"\0" + hashlib.sha256((root / name).read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def source_digest() -> str:
    """``compute_source_digest`` of this checkout, once per process: a worker takes it when its run starts
    (bench/runner/worker.py), so an edit made while the run trains is not credited to it."""
    return compute_source_digest(ROOT)


def code_state() -> dict:
    """The record's ``code`` section: git commit and dirty flag (None without git) and the source digest, with the
    patterns it covers so a reader knows what the digest vouches for."""
    commit, dirty = git_state()
    return {"commit": commit, "dirty": dirty, "source_sha256": source_digest(), "covers": list(CODE_COVERS)}


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_identity() -> str:
    """The CPU as its kernels see it: vendor, family, model and stepping from /proc/cpuinfo, and the instruction set
    torch's CPU kernels dispatch on (``torch.backends.cpu.get_cpu_capability``). A virtual machine's model name
    ("AMD EPYC") hides the generation, and two generations order float sums differently (GEMM blocking, AVX2 vs
    AVX-512), so the same seed gives other numbers: measured, 6 of 17 gate runs moved by up to 0.15 macro-F1 points
    between two hosts both named "AMD EPYC"."""
    import torch

    fields = _cpuinfo()
    where = " ".join([fields.get("vendor_id", platform.machine())] + [
        f"{key.replace('cpu ', '')} {fields[key]}" for key in ("cpu family", "model", "stepping") if key in fields])
    return f"{where}; torch {torch.backends.cpu.get_cpu_capability()}"


def library_versions() -> dict:
    """Installed versions of the libraries a result depends on (peft's decides the LoRA-on-attention path)."""
    from importlib import metadata

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **library_versions(),
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu": cpu_model(),
        "cpu_id": cpu_identity(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
