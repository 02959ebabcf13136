"""Mirror a folder of result records to TensorBoard, MLflow and/or Weights & Biases, offline::

    python -m bench.reporting.trackers runs/default --to tensorboard,mlflow,wandb

For sweeps run without ``run_bench.py --track``, or to rebuild their mirrors: each run's record (``<run_id>.json``,
read like the report reads it; failed retries beside a kept good result are not mirrored) is written to each tool
exactly as ``--track`` writes it as the run ends (bench/measure/trackers.py: names, steps, where the files go), under
the folder or ``--out``. A run mirrored earlier is replaced, not repeated. The JSON records stay the results; the
mirrors are for browsing in the tools. Exit codes: 0 every run mirrored, 1 some mirror failed (one warning line
each), 2 bad input (unknown tracker, no such folder, no record, a tracker's package not installed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.boundary import ensure_writable_folder, entry_point
from bench.config import ConfigError
from bench.measure import trackers
from bench.reporting.tables import scan_folder

VIEW = {  # tracker -> how to look at what it got (a command, or where the files are)
    "tensorboard": "tensorboard --logdir {out}/tensorboard",
    "mlflow": "mlflow ui --backend-store-uri sqlite:///{out}/mlruns/mlflow.db",
    "wandb": "wandb sync {out}/wandb/offline-run-* (uploads; until then the runs stay in {out}/wandb/)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.reporting.trackers", description=__doc__.replace("::", ":"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, metavar="RUNS_DIR", help="folder holding one result JSON per run (a "
                                                                       "sweep's --out)")
    parser.add_argument("--to", type=trackers.names_argument, required=True, metavar="TRACKERS",
                        help=f"comma-separated: {', '.join(trackers.TRACKERS)} (pip install -e \".[trackers]\")")
    parser.add_argument("--out", type=Path, help="where the mirrors go: tensorboard/, mlruns/, wandb/ (default: "
                                                 "RUNS_DIR)")
    return parser


def read_runs(folder: Path) -> list[dict]:
    """The folder's run records, skipping (with a warning line each) files that are not one."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder (expected the --out folder of a sweep)")
    scan = scan_folder(folder)
    for message in scan.unreadable + scan.duplicates:
        print(f"warning: skipped {message}", file=sys.stderr)
    if not scan.records:
        raise ConfigError(f"{folder}: no readable result JSON (*.json) found")
    return scan.records


def mirror_folder(folder: Path, names: tuple[str, ...], out: Path | None = None) -> int:
    """Mirror every run record of ``folder`` to ``names`` under ``out`` (default: the folder); the number of
    (run, tracker) mirrors that failed."""
    trackers.require_installed(names)
    runs = read_runs(Path(folder))
    out = ensure_writable_folder((out or Path(folder)).absolute())
    failures = 0
    for record in runs:
        failed = trackers.mirror(record, out, names)
        failures += len(failed)
        done = [name for name in names if name not in failed]
        print(f"{record['run']['id']}: " + (f"mirrored to {', '.join(done)}" if done else "not mirrored"), flush=True)
    for name in names:
        print(f"{name}: {VIEW[name].format(out=out)}")
    return failures


@entry_point("bench.reporting.trackers")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return 1 if mirror_folder(args.folder, args.to, args.out) else 0


if __name__ == "__main__":
    sys.exit(main())
