#!/usr/bin/env python
"""Benchmark CLIP fine-tuning strategies for video pedestrian attribute recognition. See ``--help``."""
import sys


def main(argv: list[str] | None = None) -> int:
    """The command line (``bench.cli.main``, exit codes there), imported when called: its imports (torch, pandas)
    take seconds, and a Ctrl-C during them must meet the error boundary too, after them (a keypress inside torch's
    native start-up can abort the interpreter instead of raising)."""
    from bench.boundary import ctrl_c_deferred

    with ctrl_c_deferred():
        from bench.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    try:  # the boundary (the standard library only) first: a Ctrl-C in its milliseconds ends the same way
        from bench.boundary import run_script
    except KeyboardInterrupt:
        print("interrupted: nothing was started", file=sys.stderr)
        sys.exit(130)  # bench.boundary.EXIT_INTERRUPTED
    sys.exit(run_script(main, "run_bench"))
