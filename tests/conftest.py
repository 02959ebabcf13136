"""Shared test fixtures: the micro CLIP backbone (32 px, 2 layers) so every test runs on CPU in seconds."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Rendered synthetic splits are cached on disk (data/render_cache.py): tests, and the runs they spawn, use their own.
os.environ["PAR_BENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="par-bench-test-cache-")
# Sweeps run one at a time in the calling process unless a test asks for --jobs (the CLI's default on CPU is one
# single-thread run per core: tests/test_pool.py checks that default on its own).
os.environ["PAR_BENCH_JOBS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from data.schema import MARS  # noqa: E402
from models.par_model import FusionSpec, build_par_model  # noqa: E402

MICRO = "par-vit-micro"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def micro_model(temporal: str = "mean", num_frames: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_par_model(backbone=MICRO, pretrained=None, sentences=MARS.sentences(),
                           fusion=FusionSpec(width=64, heads=2), temporal=temporal, num_frames=num_frames)


def micro_video(batch: int = 2, frames: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def strategy_registry_restored():
    """Each test starts from the built-in strategies: the strategies a test's plugin (``PAR_BENCH_PLUGINS``)
    registered are unregistered afterwards and the plugin module forgotten, so two tests may ship different plugins
    under one module name and no test sees another's strategies (the strategy list of docs/strategies.md,
    ``--strategies all``)."""
    from strategies import registry

    registry.names()
    registered = dict(registry._REGISTRY)
    yield
    added = [entry for name, entry in registry._REGISTRY.items() if name not in registered]
    registry._REGISTRY.clear()
    registry._REGISTRY.update(registered)
    for name in {entry.apply.__module__ for entry in added}:
        module_file = getattr(sys.modules.get(name), "__file__", None) or ""
        if module_file and not module_file.startswith(str(PROJECT_ROOT)):  # a plugin file, not the project's
            del sys.modules[name]


@pytest.fixture
def model():
    return micro_model()


@pytest.fixture
def video():
    return micro_video()


SLOW_CALLS = ("run_bench", "subprocess", "run_sweep", "torchrun", "ray.init", "Executor", "bench.tools.dryrun",
              "main([")


def pytest_collection_modifyitems(items):
    """Mark as ``slow`` every test whose body runs a sweep, a process or an engine end to end, so that
    ``pytest -m "not slow"`` is a fast inner loop; CI runs everything. Marked by what the test calls, so a new
    end-to-end test is marked without anyone remembering to."""
    import inspect

    for item in items:
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function is not None else ""
        except (OSError, TypeError):
            continue
        if any(call in source for call in SLOW_CALLS):
            item.add_marker(pytest.mark.slow)
