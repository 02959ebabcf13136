"""The first code of every worker process: it runs the checkout that holds this file, and only that one.

A sweep is started from one checkout (its ``run_bench.py`` or module); every process that works for it must import
the project from that checkout, whatever the working directory, ``PYTHONPATH`` or an installed copy of the project
(``pip install -e`` of another clone) would find first, or a record measures code other than the one that was run
and names another commit. So a worker is started through this file, by its path, never by module name:

    python CHECKOUT/bench/runner/boot.py [-u] -m MODULE [ARG ...]        a subprocess, a torchrun rank, a Slurm task

runs ``python [-u] -m MODULE ARG ...`` with the checkout first on ``sys.path``; ``in_checkout`` does the same for a
function: a forked worker's target is ``runpy.run_path`` of this file (``CALL_RUN_NAME``), a Ray task is this module's
function sent by value. ``enter`` also forgets any module of the project already imported from elsewhere (a fork
server's preload, a pickled reference resolved before). Only the standard library is imported before the checkout is
in place, so nothing of the project can be found anywhere else first.
"""
from __future__ import annotations

import importlib  # loaded with the interpreter, as os and sys are: none of the three is looked up on sys.path
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
PROJECT = ("bench", "strategies", "models", "data", "run_bench")  # the checkout's top-level modules
USAGE = "usage: python bench/runner/boot.py [-u] -m MODULE [ARG ...]"
CALL_RUN_NAME = "__bench_boot__"  # runpy.run_path(this file, init_globals={"CALL": (root, target, *args)})


def enter(root: str = ROOT) -> None:
    """Make ``root`` the first place Python looks for the project: first on ``sys.path`` (where a script's own
    folder or the working directory stood), and no module of the project left imported from another place."""
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [root] + [p for p in sys.path if p and os.path.realpath(p) not in (root, here)]
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in PROJECT and not _inside(getattr(module, "__file__", None), root):
            del sys.modules[name]
    importlib.invalidate_caches()


def _inside(path: str | None, root: str) -> bool:
    return path is not None and os.path.realpath(path).startswith(root + os.sep)


def in_checkout(root: str, target: str, *args):
    """Call ``target`` ("package.module:function") with ``args``, imported from ``root``: what a forked worker or a
    Ray task runs, sent by value or as a standard-library call so that nothing is looked up before ``enter``."""
    enter(root)
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)(*args)


def command(*, root: str = ROOT) -> list[str]:
    """The interpreter and this file of ``root``: put ``-m MODULE ARG ...`` after it."""
    return [sys.executable, os.path.join(root, "bench", "runner", "boot.py")]


def python_path(env: dict, *, root: str = ROOT, cwd: str | None = None) -> str:
    """``PYTHONPATH`` for a worker: the checkout first (for any process a worker starts in turn), then the caller's
    own entries made absolute against its folder, so a plugin folder given as ``.`` is found from anywhere."""
    cwd = cwd or os.getcwd()
    entries = [os.path.join(cwd, p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys([root, *map(os.path.normpath, entries)]))


def _run_module(argv: list[str]) -> None:
    """``[-u] -m MODULE ARG ...`` as ``python`` itself would run it (``runpy``, what ``-m`` uses)."""
    import runpy

    if argv[:1] == ["-u"]:
        sys.stdout.reconfigure(line_buffering=True, write_through=True)
        sys.stderr.reconfigure(line_buffering=True, write_through=True)
        argv = argv[1:]
    if len(argv) < 2 or argv[0] != "-m":
        sys.exit(USAGE)
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    enter()
    _run_module(sys.argv[1:])
elif __name__ == CALL_RUN_NAME:  # a forked worker: its target is runpy.run_path of this file
    in_checkout(*globals()["CALL"])
