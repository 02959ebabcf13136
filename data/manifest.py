"""The prepared-dataset manifest: one plain-text description of every tracklet, shared by MARS and Duke.

A raw download (MARS-Attribute, DukeMTMC-VID-Attribute; Chen et al., PRCV 2019) or the authors' re-encoded layout is
turned into a :class:`Manifest` once (``python -m data.prepare``); the loader then reads only the manifest.
On disk a prepared root holds three inspectable files, never a pickle:

- ``manifest.csv``: one row per tracklet: ``track_id, split, pid, camera, num_frames`` then the one-hot label columns
  named by ``schema.column_names()``, in schema order (0/1 integers);
- ``frames.csv``: ``track_id, frame, path`` with frames in temporal order; ``path`` is relative to ``frames_root``;
- ``prepare_report.json``: dataset name, ``frames_root`` (absolute), counts per split, skipped and unmatched items.

This module also holds the parts the MARS and Duke readers share: the raw annotation CSV parser (class indices ->
one-hot columns), annotation <-> tracklet matching, and the identity-disjoint validation split.
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.schema import AttributeSchema, get_schema

MANIFEST_FILE = "manifest.csv"
FRAMES_FILE = "frames.csv"
REPORT_FILE = "prepare_report.json"
SPLITS = ("train", "val", "test")
REAL_DATASETS = ("mars", "duke")
ID_COLUMNS = ("track_id", "split", "pid", "camera", "num_frames")
EXAMPLES_IN_REPORT = 10  # how many unmatched keys the report lists by name


class DatasetError(ValueError):
    """A dataset file or folder is missing or malformed; the message names the file and the problem."""

    bad_input = True  # a bench.errors.BenchError: the command line prints the message alone (exit 2)


@dataclass
class Tracklet:
    """One tracklet: ``frames`` are paths relative to the manifest's ``frames_root``, in temporal order."""

    track_id: str
    pid: int
    camera: int
    split: str
    frames: list[str]
    tracklet: int = -1  # tracklet number inside (pid, camera); -1 when the source does not give one


@dataclass
class Manifest:
    """Tracklets, their (N, A) one-hot labels and the preparation report."""

    dataset: str
    frames_root: Path
    tracks: list[Tracklet]
    labels: np.ndarray  # (N, A) uint8
    report: dict = field(default_factory=dict)

    @property
    def schema(self) -> AttributeSchema:
        return get_schema(self.dataset)

    def indices(self, split: str) -> np.ndarray:
        """Row indices of the tracklets in ``split``, in manifest order."""
        return np.array([i for i, t in enumerate(self.tracks) if t.split == split], dtype=np.int64)

    def split_counts(self) -> dict[str, int]:
        return {s: sum(t.split == s for t in self.tracks) for s in SPLITS}


# ---------------------------------------------------------------------------------------------------------------------
# small helpers


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing {what}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: missing {what} folder")
    return path


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value, so ``F2`` comes before ``F10`` (frame order)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def track_name(pid: int, camera: int, tracklet: int) -> str:
    """The authors' tracklet name, e.g. ``0001C1T0002`` (pid 1, camera 1, tracklet 2)."""
    return f"{pid:04d}C{camera}T{tracklet:04d}"


def one_hot_violations(labels: np.ndarray, schema: AttributeSchema) -> int:
    """Rows where some multi-class group does not have exactly one column set."""
    bad = np.zeros(len(labels), dtype=bool)
    for group, cols in zip(schema.groups, schema.group_slices(), strict=True):
        if not group.binary:
            bad |= labels[:, cols].sum(axis=1) != 1
    return int(bad.sum())


# ---------------------------------------------------------------------------------------------------------------------
# raw annotation CSVs (Chen et al.): three id columns, then one integer class index per field


@dataclass(frozen=True)
class RawField:
    """One value column of a raw annotation CSV.

    ``group`` names the schema group it fills; ``None`` marks a quality flag (occlusion, cut, ...), which is read and
    range-checked but is not an attribute. A binary field sets its group's single column when the value is 1;
    a multi-class field with value ``v`` sets column ``start + v`` of its group.
    """

    name: str
    classes: int
    group: str | None = None


QUALITY_FLAGS = tuple(RawField(n, 2) for n in ("occlusion", "cut", "multi-person", "back-dominant", "target-change",
                                               "target-miss", "wrong-target"))


@dataclass(frozen=True)
class Annotation:
    """One annotation row: its 1-based line number in the CSV (for messages) and its (A,) one-hot labels."""

    line: int
    labels: np.ndarray


AnnotationKey = tuple[int, int, int]  # (pid, camera, tracklet)


def _field_targets(fields: tuple[RawField, ...], schema: AttributeSchema) -> list[tuple[int, bool] | None]:
    """(schema start column, group is binary) of every field, None for quality flags; checks class counts."""
    targets = []
    for f in fields:
        if f.group is None:
            targets.append(None)
            continue
        group = schema.group(f.group)
        expected = 2 if group.binary else group.width
        if f.classes != expected:
            raise ValueError(f"raw field {f.name!r} has {f.classes} classes but group {group.name!r} needs {expected}")
        targets.append((schema.boundaries[schema.group_index(f.group)], group.binary))
    return targets


def _parse_int(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _read_rows(path: Path) -> tuple[list[tuple[int, list[str]]], bool, int]:
    """Non-blank rows with 1-based line numbers (a non-numeric first row is a header and dropped), the header flag
    and the first row's width."""
    # errors="replace": a header row may not be UTF-8 (the released files were GBK at one point); only numbers matter
    with open(require_file(path, "annotation CSV"), newline="", encoding="utf-8-sig", errors="replace") as fh:
        rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(fh), start=1) if any(row)]
    if not rows:
        raise DatasetError(f"{path}: annotation CSV is empty")
    has_header = any(_parse_int(c) is None for c in rows[0][1][:3])
    return (rows[1:] if has_header else rows), has_header, len(rows[0][1])


def _pick_fields(width: int, variants: list[tuple[RawField, ...]], path: Path) -> tuple[RawField, ...]:
    for fields in variants:
        if width == 3 + len(fields):
            return fields
    expected = " or ".join(str(3 + len(f)) for f in variants)
    raise DatasetError(f"{path}: expected {expected} columns (person_id, camera_id, tracklets_id, then "
                       f"{', '.join(f.name for f in variants[0])}), got {width}")


def _encode_row(values: list[int], fields: tuple[RawField, ...], targets: list[tuple[int, bool] | None], *,
                num_columns: int, where: str) -> np.ndarray:
    """Class indices -> (A,) one-hot row: a binary field copies its 0/1 value, a multi-class one sets start + v."""
    labels = np.zeros(num_columns, dtype=np.uint8)
    for value, f, target in zip(values, fields, targets, strict=True):
        if not 0 <= value < f.classes:
            raise DatasetError(f"{where}, column {f.name!r}: class index {value} out of range 0..{f.classes - 1}")
        if target is not None:
            start, binary = target
            labels[start if binary else start + value] = value if binary else 1
    return labels


def read_annotation_csv(path: Path, variants: list[tuple[RawField, ...]], schema: AttributeSchema
                        ) -> tuple[dict[AnnotationKey, Annotation], dict]:
    """Parse a raw annotation CSV (with or without a header row) into ``{(pid, camera, tracklet): Annotation}``.

    ``variants`` lists the accepted field layouts (e.g. with and without the seven quality flags); the column count
    picks one. Identical duplicate rows are merged (counted); conflicting duplicates are an error.
    """
    rows, has_header, width = _read_rows(path)
    fields = _pick_fields(width, variants, path)
    targets = _field_targets(fields, schema)
    annotations: dict[AnnotationKey, Annotation] = {}
    duplicates = 0
    for line, cells in rows:
        if len(cells) != 3 + len(fields):
            raise DatasetError(f"{path}: line {line} has {len(cells)} columns, expected {3 + len(fields)}")
        values = [_parse_int(c) for c in cells]
        if None in values:
            col = values.index(None)
            raise DatasetError(f"{path}: line {line}, column {col + 1}: {cells[col]!r} is not an integer")
        key = (values[0], values[1], values[2])
        labels = _encode_row(values[3:], fields, targets, num_columns=schema.num_columns, where=f"{path}: line {line}")
        if key in annotations:
            if not np.array_equal(annotations[key].labels, labels):
                raise DatasetError(f"{path}: lines {annotations[key].line} and {line} annotate tracklet {key} "
                                   "(pid, camera, tracklet) differently")
            duplicates += 1
            continue
        annotations[key] = Annotation(line, labels)
    info = {"file": str(path), "rows": len(rows), "header": has_header, "fields": [f.name for f in fields],
            "duplicate_rows_merged": duplicates}
    return annotations, info


# ---------------------------------------------------------------------------------------------------------------------
# matching annotations to tracklets


def _describe(key: Hashable) -> str:
    if isinstance(key, tuple) and len(key) == 3:
        return f"pid {key[0]} camera {key[1]} tracklet {key[2]}"
    return str(key)


def attach_labels(tracks: list[Tracklet], annotations: dict, *, key: Callable[[Tracklet], Hashable], source: Path,
                  allow_unmatched: bool, num_columns: int) -> tuple[list[Tracklet], np.ndarray, dict]:
    """Keep the tracklets that have an annotation (looked up by ``key(track)``), in order, with their (N, A) labels.

    Tracklets without an annotation and annotations without a tracklet are counted (and the first few named) in
    the returned report; either one is fatal unless ``allow_unmatched``.
    """
    keys = [key(t) for t in tracks]
    kept = [t for t, k in zip(tracks, keys, strict=True) if k in annotations]
    unannotated = [t.track_id for t, k in zip(tracks, keys, strict=True) if k not in annotations]
    unmatched = sorted(set(annotations) - set(keys), key=lambda k: annotations[k].line)
    examples = [f"line {annotations[k].line}: {_describe(k)}" for k in unmatched[:EXAMPLES_IN_REPORT]]
    report = {"unannotated_tracklets": len(unannotated), "unannotated_examples": unannotated[:EXAMPLES_IN_REPORT],
              "unmatched_annotations": len(unmatched), "unmatched_examples": examples}
    hint = "pass --allow-unmatched (allow_unmatched=True) to"
    if not allow_unmatched and unannotated:
        raise DatasetError(f"{source}: {len(unannotated)} tracklets have no annotation (first: {unannotated[0]}); "
                           f"{hint} drop them")
    if not allow_unmatched and unmatched:
        raise DatasetError(f"{source}: {len(unmatched)} annotations match no tracklet (first: "
                           f"{report['unmatched_examples'][0]}); {hint} ignore them")
    labels = np.zeros((len(kept), num_columns), dtype=np.uint8)  # (N, A)
    for row, k in enumerate(k for k in keys if k in annotations):
        labels[row] = annotations[k].labels
    return kept, labels, report


# ---------------------------------------------------------------------------------------------------------------------
# validation split


def carve_validation(manifest: Manifest, *, fraction: float, seed: int) -> list[int]:
    """Move a seeded random ``fraction`` of the training identities (pids) to ``val``; returns the val pids.

    The split is by identity so no person is in both train and val (tracklets of one person are near-duplicates).
    At least one identity goes to val when ``fraction > 0`` and at least one stays in train.
    """
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"val fraction must be in [0, 1), got {fraction}")
    pids = sorted({t.pid for t in manifest.tracks if t.split in ("train", "val")})
    n_val = 0 if fraction == 0 or len(pids) < 2 else min(len(pids) - 1, max(1, round(fraction * len(pids))))
    val_pids = sorted(np.random.default_rng(seed).permutation(pids)[:n_val].tolist())
    chosen = set(val_pids)
    for t in manifest.tracks:
        if t.split in ("train", "val"):
            t.split = "val" if t.pid in chosen else "train"
    return val_pids


PUBLISHED_COUNTS = {"mars": {"train": 8298, "test": 8062}, "duke": {"train": 2196, "test": 2636}}


def published_check(manifest: Manifest) -> list[str]:
    """Differences from the published split sizes (Chen et al.), train counted before the val carve-out."""
    counts = manifest.split_counts()
    got = {"train": counts["train"] + counts["val"], "test": counts["test"]}
    expected = PUBLISHED_COUNTS.get(manifest.dataset, {})
    return [f"{split}: {got[split]} tracklets, published {n}" for split, n in expected.items() if got[split] != n]


def finalize(manifest: Manifest, *, val_fraction: float, seed: int) -> Manifest:
    """Carve the validation split (unless the source listed one) and record counts and checks in the report."""
    warnings = published_check(manifest)
    if any(t.split == "val" for t in manifest.tracks):
        val = {"source": "split list"}
    else:
        val = {"fraction": val_fraction, "seed": seed,
               "pids": carve_validation(manifest, fraction=val_fraction, seed=seed)}
    manifest.report.update({
        "tracklets": manifest.split_counts(),
        "identities": {s: len({t.pid for t in manifest.tracks if t.split == s}) for s in SPLITS},
        "frames": sum(len(t.frames) for t in manifest.tracks),
        "published_tracklets": PUBLISHED_COUNTS.get(manifest.dataset), "matches_published": not warnings,
        "warnings": warnings, "val_split": val,
        "labels_not_one_hot": one_hot_violations(manifest.labels, manifest.schema)})
    return manifest


# ---------------------------------------------------------------------------------------------------------------------
# reading and writing a prepared root


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        write(fh)
    os.replace(tmp, path)


def write_manifest(manifest: Manifest, root: Path) -> None:
    """Write ``manifest.csv``, ``frames.csv`` and ``prepare_report.json`` under ``root`` (atomically, file by file)."""
    root.mkdir(parents=True, exist_ok=True)
    names = manifest.schema.column_names()

    def manifest_rows(fh):
        out = csv.writer(fh)
        out.writerow([*ID_COLUMNS, *names])
        for t, row in zip(manifest.tracks, manifest.labels, strict=True):
            out.writerow([t.track_id, t.split, t.pid, t.camera, len(t.frames), *row.tolist()])

    def frame_rows(fh):
        out = csv.writer(fh)
        out.writerow(["track_id", "frame", "path"])
        for t in manifest.tracks:
            out.writerows((t.track_id, i, p) for i, p in enumerate(t.frames))

    report = {**manifest.report, "dataset": manifest.dataset, "frames_root": str(manifest.frames_root)}
    _atomic_write(root / MANIFEST_FILE, manifest_rows)
    _atomic_write(root / FRAMES_FILE, frame_rows)
    _atomic_write(root / REPORT_FILE, lambda fh: json.dump(report, fh, indent=2))


def _read_report(root: Path) -> dict:
    path = require_file(root / REPORT_FILE, "preparation report")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    for key in ("dataset", "frames_root"):
        if key not in report:
            raise DatasetError(f"{path}: missing key {key!r}")
    return report


def _read_tracks(path: Path, schema: AttributeSchema) -> tuple[list[Tracklet], np.ndarray, list[int]]:
    with open(require_file(path, "manifest"), newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    expected = [*ID_COLUMNS, *schema.column_names()]
    if not rows or rows[0] != expected:
        raise DatasetError(f"{path}: header must be {len(expected)} columns {ID_COLUMNS} + the {schema.name} "
                           f"label columns in schema order")
    tracks, labels, counts = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            tracks.append(Tracklet(row[0], int(row[2]), int(row[3]), row[1], []))
            counts.append(int(row[4]))
        except (ValueError, IndexError):
            raise DatasetError(f"{path}: line {line} is malformed") from None
        if row[1] not in SPLITS or len(row) != len(expected):
            raise DatasetError(f"{path}: line {line}: bad split {row[1]!r} or {len(row)} columns")
        labels.append(_label_row(row[5:], expected[5:], where=f"{path}: line {line}"))
    return tracks, np.array(labels, dtype=np.uint8).reshape(len(tracks), schema.num_columns), counts


def _label_row(cells: list[str], names: list[str], *, where: str) -> list[int]:
    """One row of 0/1 labels; anything else (a 2, a -1, text) is named by file, line and column."""
    for cell, name in zip(cells, names, strict=True):
        if cell.strip() not in ("0", "1"):
            raise DatasetError(f"{where}, column {name!r}: label {cell!r}, expected 0 or 1")
    return [int(cell) for cell in cells]


def _read_frames(path: Path, tracks: list[Tracklet], counts: list[int]) -> None:
    by_id = {t.track_id: t for t in tracks}
    with open(require_file(path, "frame list"), newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        if next(reader, None) != ["track_id", "frame", "path"]:
            raise DatasetError(f"{path}: header must be track_id,frame,path")
        for line, row in enumerate(reader, start=2):
            if len(row) != 3 or row[0] not in by_id:
                raise DatasetError(f"{path}: line {line}: expected track_id,frame,path of a manifest track, got {row}")
            by_id[row[0]].frames.append(row[2])
    for t, n in zip(tracks, counts, strict=True):
        if not t.frames:
            raise DatasetError(f"{path}: track {t.track_id} lists no frames (an empty tracklet, which "
                               "python -m data.prepare drops: prepare the dataset again)")
        if len(t.frames) != n:
            raise DatasetError(f"{path}: track {t.track_id} has {len(t.frames)} frames, manifest says {n}")


def read_manifest(root: str | Path) -> Manifest:
    """Read a prepared root written by :func:`write_manifest`."""
    root = Path(root)
    report = _read_report(root)
    schema = get_schema(report["dataset"])
    tracks, labels, counts = _read_tracks(root / MANIFEST_FILE, schema)
    _read_frames(root / FRAMES_FILE, tracks, counts)
    return Manifest(report["dataset"], Path(report["frames_root"]), tracks, labels, report)
