"""Turn a raw MARS / DukeMTMC-VID-Attribute download (or the authors' re-encoded layout) into a dataset root.

    python -m data.prepare mars --raw /data/mars --out /data/mars_prepared
    python -m data.prepare duke --raw /data/DukeMTMC-VideoReID --out /data/duke_prepared --val-fraction 0.1 --seed 0
    python -m data.prepare mars --raw /data/mars_reencoded --out /data/mars_prepared --format reencoded

The root gets ``manifest.csv``, ``frames.csv`` and ``prepare_report.json`` (see :mod:`data.manifest`); frame paths
stay relative to the raw folder, whose absolute path the report records, so nothing is copied.

Every listed image is opened (its header parsed: catches missing, empty and non-image files); ``--check-images``
decodes every pixel as well (catches truncated JPEGs too). Unreadable frames are left out of their tracklet, a
tracklet left without frames is dropped, and both are counted and named in the report and the printed summary, so
training never meets an image it cannot read. Cost per 256x128 MARS JPEG on one core of this project's CPU:
0.35 ms to open, 3.3 ms to decode, i.e. about 7 min and 65 min of CPU for MARS's 1.19 M frames; both run on
``--workers`` processes (default: all cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

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


def image_problem(path: str, decode: bool = False) -> str | None:
    """None if the image opens (and, with ``decode``, decodes to the last pixel); else what is wrong with it."""
    try:
        with Image.open(path) as image:
            if decode:
                image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # UnidentifiedImageError is an OSError
        return f"{type(error).__name__}: {error}"
    return None


def _problems(paths: list[str], *, decode: bool, workers: int) -> list[str | None]:
    if workers <= 1 or len(paths) < 2000:  # a pool costs more than it saves on small sets
        return [image_problem(p, decode) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(image_problem, paths, [decode] * len(paths), chunksize=512))


def drop_unreadable_frames(manifest: Manifest, *, decode: bool = False, workers: int = 1) -> Manifest:
    """Check every listed image; leave unreadable frames out, drop tracklets left empty, and report both."""
    start = time.perf_counter()
    listed = [(t, f) for t in manifest.tracks for f in t.frames]
    problems = _problems([str(manifest.frames_root / f) for _, f in listed], decode=decode, workers=workers)
    bad = [(t, f, p) for (t, f), p in zip(listed, problems, strict=True) if p is not None]
    for track, frame, _ in bad:
        track.frames.remove(frame)
    keep = [i for i, t in enumerate(manifest.tracks) if t.frames]
    dropped = [t.track_id for t in manifest.tracks if not t.frames]
    manifest.tracks, manifest.labels = [manifest.tracks[i] for i in keep], manifest.labels[np.array(keep, dtype=int)]
    manifest.report.update({
        "image_check": "decode" if decode else "open", "images_checked": len(listed),
        "image_check_s": round(time.perf_counter() - start, 3), "unreadable_frames": len(bad),
        "unreadable_examples": [f"{f}: {p}" for _, f, p in bad[:10]],
        "tracklets_without_readable_frames": len(dropped), "tracklets_dropped_examples": dropped[:10]})
    return manifest


def require_writable(out: Path) -> None:
    """Fail before the (long) build if ``--out`` cannot take files."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: is a file, expected a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out) as probe:
            probe.write(b"\0" * 65536)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise DatasetError(f"--out {out}: not writable ({error.strerror or error})") from None


def prepare(dataset: str, raw: str | Path, out: str | Path, *, fmt: str = "raw", val_fraction: float = 0.1,
            seed: int = 0, allow_unmatched: bool = False, progress: bool = False, check_images: bool = False,
            workers: int = 1) -> Manifest:
    """Build, check the images, carve the identity-disjoint val split, and write the dataset root ``out``."""
    require_writable(Path(out))
    manifest = build_manifest(dataset, raw, fmt=fmt, allow_unmatched=allow_unmatched, progress=progress)
    drop_unreadable_frames(manifest, decode=check_images, workers=workers)
    if not manifest.tracks:
        raise DatasetError(f"{raw}: no tracklet has a readable image (first: {manifest.report['unreadable_examples']})")
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
    skipped = {k: r[k] for k in ("junk_skipped", "distractors_skipped", "query_in_gallery", "unreadable_frames",
                                 "tracklets_without_readable_frames") if r.get(k)}
    if skipped:
        lines.append("skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    if "images_checked" in r:
        lines.append(f"images checked ({r['image_check']}): {r['images_checked']} in {r['image_check_s']:.1f} s"
                     + (f"; unreadable, first: {r['unreadable_examples'][0]}" if r["unreadable_frames"] else ""))
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
    p.add_argument("--check-images", action="store_true",
                   help="decode every listed image, not only open it (also catches truncated files; about 10x "
                        "slower: ~65 CPU-minutes for MARS)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes that check images (default: all cores)")
    p.add_argument("--allow-unmatched", action="store_true",
                   help="drop tracklets without an annotation and ignore annotations without a tracklet "
                        "(counted in the report) instead of failing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        manifest = prepare(args.dataset, args.raw, args.out, fmt=args.fmt, val_fraction=args.val_fraction,
                           seed=args.seed, allow_unmatched=args.allow_unmatched, progress=True,
                           check_images=args.check_images, workers=max(1, args.workers))
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(manifest))
    print(f"wrote {args.out / 'manifest.csv'}, frames.csv, prepare_report.json")
    return 0


if __name__ == "__main__":
    from bench.boundary import run_entry  # the command line's error boundary (one line, exit 2 on bad input)

    sys.exit(run_entry(main, "data.prepare"))
