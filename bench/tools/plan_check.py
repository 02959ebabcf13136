"""The cost plan against measurement: every finished, CPU-profiled run in the given result folders is planned again
from its own recorded config (``run_bench.py --plan``'s code, bench/runner/planning.py), and the prediction is put
beside what the run measured:

    python -m bench.tools.plan_check results/paper-profile-cpu results/paper-profile-cpu-bf16 \
        results/paper-profile-b16-cpu-*

FLOPs must be equal (the plan counts with the measured runs' own counter); peak memory is compared as the CPU
profiler sees it (live tensor bytes, weights the step never reads left out) and must lie within ``--tolerance``
percent. Exit 1 if any run misses either; ``--out FOLDER`` writes every row (``plan_check.json``) and the table
with its summary (``plan_check.md``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.boundary import entry_point


def build_parser() -> argparse.ArgumentParser:
    from bench.measure.cuda_memory import GPUS
    from bench.runner.planning import GPU_TOLERANCE_PCT, MEMORY_TOLERANCE_PCT

    p = argparse.ArgumentParser(prog="python -m bench.tools.plan_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="result folders holding run records (*.json)")
    p.add_argument("--strategies", help="comma-separated strategy names (default: every run found)")
    p.add_argument("--tolerance", type=float, default=MEMORY_TOLERANCE_PCT,
                   help=f"largest |predicted - measured| / measured peak memory, in percent "
                        f"(default {MEMORY_TOLERANCE_PCT})")
    p.add_argument("--gpu", choices=sorted(GPUS), help="also check the runs measured on a GPU, as this GPU: the CUDA "
                   "model's memory_reserved peak against the run's (bench/measure/cuda_memory.py)")
    p.add_argument("--gpu-tolerance", type=float, default=GPU_TOLERANCE_PCT,
                   help=f"largest |predicted - measured| / measured reserved peak of a GPU run, in percent "
                        f"(default {GPU_TOLERANCE_PCT})")
    p.add_argument("--out", type=Path, help="also write plan_check.json (every row) and plan_check.md (the table) "
                                            "to this folder")
    return p


def main(argv: list[str] | None = None) -> int:
    from bench.records import write_json_atomic
    from bench.runner.planning import compare_with_records, comparison_table

    args = build_parser().parse_args(argv)
    strategies = {s.strip() for s in args.strategies.split(",") if s.strip()} if args.strategies else None
    from bench.measure.cuda_memory import GPUS

    rows = compare_with_records(args.folders, strategies=strategies, gpu=GPUS[args.gpu] if args.gpu else None,
                                on_row=lambda row: print(_progress(row), flush=True))
    if not rows:
        print(f"no finished {'CPU- or GPU-' if args.gpu else 'CPU-'}profiled run found in "
              + ", ".join(map(str, args.folders)), file=sys.stderr)
        return 2
    table = comparison_table(rows)
    planned = [r for r in rows if "error" not in r]
    missed = [r for r in rows if "error" in r or not r["flops_equal"]
              or abs(r["peak_gap_pct"]) > (args.gpu_tolerance if "gpu_model" in r else args.tolerance)]
    worst = max((abs(r["peak_gap_pct"]) for r in planned), default=float("nan"))
    summary = (f"{len(rows)} run(s), {len(rows) - len(planned)} not planned: FLOPs equal in "
               f"{sum(r['flops_equal'] for r in planned)}, largest memory gap "
               f"{worst:.3f}% (tolerance {args.tolerance}% CPU, {args.gpu_tolerance}% GPU reserved); "
               f"{len(missed)} miss")
    print(f"{table}\n{summary}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out / "plan_check.json", {"kind": "cost-plan-check", "tolerance_pct": args.tolerance,
                                                         "folders": [str(f) for f in args.folders], "rows": rows})
        (args.out / "plan_check.md").write_text(f"# Cost plan against measurement\n\n`python -m bench.tools."
                                                f"plan_check {' '.join(str(f) for f in args.folders)}`\n\n"
                                                f"{table}\n\n{summary}\n", encoding="utf-8")
    return 1 if missed else 0


def _progress(row: dict) -> str:
    if "error" in row:
        return f"{row['id']}: not planned: {row['error']}"
    return (f"{Path(row['source']).name}/{row['id']}: FLOPs {'equal' if row['flops_equal'] else 'DIFFER'}, peak "
            f"{row['peak_bytes_predicted']} predicted vs {row['peak_bytes_measured']} measured "
            f"({row['peak_gap_pct']:+.3f}%), planned in {row['trace_time_s']:.1f} s")


if __name__ == "__main__":
    sys.exit(entry_point("plan_check")(main)())
