"""Imported once by the sweep's fork server (bench/runner/sweep.py): the heavy third-party libraries every worker needs.

Only third-party modules belong here. The project's own modules are imported in each worker, so strategy plugins
(``PAR_BENCH_PLUGINS``) and code changes between sweeps of one process are seen, and no project state is shared.
"""
import open_clip  # noqa: F401  (imports torch and torchvision)
import peft  # noqa: F401
