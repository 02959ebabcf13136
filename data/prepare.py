"""Turn a raw MARS / DukeMTMC-VID-Attribute download (or the authors' re-encoded layout) into a dataset root.

    python -m data.prepare mars --raw /data/mars --out /data/mars_prepared
    python -m data.prepare duke --raw /data/DukeMTMC-VideoReID --out /data/duke_prepared --val-fraction 0.1 --seed 0
    python -m data.prepare mars --raw /data/mars_reencoded --out /data/mars_prepared --format reencoded

The root gets ``manifest.csv``, ``frames.csv`` and ``prepare_report.json`` (see :mod:`data.manifest`); frame paths
stay relative to the raw folder, whose absolute path the report records, so nothing is copied.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data.duke import build_duke_manifest
from data.manifest import PUBLISHED_COUNTS, REAL_DATASETS, DatasetError, Manifest, finalize, write_manifest
from data.mars import build_mars_manifest
from data.reencoded import build_reencoded_manifest

FORMATS = ("raw", "reencoded")


def build_manifest(dataset: str, raw: str | Path, *, fmt: str = "raw", allow_unmatched: bool = False,
                   progress: bool = False) -> Manifest:
    """The train/test manifest of ``raw`` in format ``fmt`` (no val split yet)."""
    if dataset not in REAL_DATASETS or fmt not in FORMATS:
        raise DatasetError(f"{raw}: unknown dataset {dataset!r} or format {fmt!r}; expected {REAL_DATASETS} / "
                           f"{FORMATS}")
    if fmt == "reencoded":
        return build_reencoded_manifest(dataset, raw, allow_unmatched=allow_unmatched, progress=progress)
    build = build_mars_manifest if dataset == "mars" else build_duke_manifest
    return build(raw, allow_unmatched=allow_unmatched, progress=progress)


def prepare(dataset: str, raw: str | Path, out: str | Path, *, fmt: str = "raw", val_fraction: float = 0.1,
            seed: int = 0, allow_unmatched: bool = False, progress: bool = False) -> Manifest:
    """Build, carve the identity-disjoint val split, and write the dataset root ``out``; returns the manifest."""
    manifest = build_manifest(dataset, raw, fmt=fmt, allow_unmatched=allow_unmatched, progress=progress)
    finalize(manifest, val_fraction=val_fraction, seed=seed)
    write_manifest(manifest, Path(out))
    return manifest


def summary(manifest: Manifest) -> str:
    """Human-readable counts, with a warning line when the split sizes differ from the published ones."""
    r = manifest.report
    published = PUBLISHED_COUNTS[manifest.dataset]
    lines = [f"{manifest.dataset}: " + ", ".join(f"{s} {n} tracklets / {r['identities'][s]} ids"
                                                 for s, n in r["tracklets"].items()),
             f"frames {r['frames']}, unmatched annotations {r['unmatched_annotations']}, "
             f"unannotated tracklets {r['unannotated_tracklets']}"]
    skipped = {k: r[k] for k in ("junk_skipped", "distractors_skipped", "query_in_gallery") if k in r}
    if skipped:
        lines.append("skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    if r["warnings"]:
        lines.append(f"WARNING: split sizes differ from the published {published['train']} train / "
                     f"{published['test']} test tracklets ({'; '.join(r['warnings'])}); fine for a subset")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=REAL_DATASETS, help="which attribute dataset the raw folder holds")
    p.add_argument("--raw", required=True, type=Path,
                   help="raw download: MARS (bbox_train/, bbox_test/, info/, mars_attributes.csv), Duke (train/, "
                        "query/, gallery/, duke_attributes.csv), or the re-encoded layout with --format reencoded")
    p.add_argument("--out", required=True, type=Path, help="dataset root to write (created if missing)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="raw", help="layout of --raw (default: raw)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of training identities moved to the val split (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val identity draw (default: 0)")
    p.add_argument("--allow-unmatched", action="store_true",
                   help="drop tracklets without an annotation and ignore annotations without a tracklet "
                        "(counted in the report) instead of failing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        manifest = prepare(args.dataset, args.raw, args.out, fmt=args.fmt, val_fraction=args.val_fraction,
                           seed=args.seed, allow_unmatched=args.allow_unmatched, progress=True)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(manifest))
    print(f"wrote {args.out / 'manifest.csv'}, frames.csv, prepare_report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
