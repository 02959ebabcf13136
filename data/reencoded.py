"""The authors' re-encoded layout (what the released VTF / VTFPAR++ code reads), read without a prepare step.

The script that made it from the raw files was never published; its form is known from the released readers.
Expected directory (the first file name found in each tuple is used; the report records which)::

    DIR/labels.csv | new_encoded.csv | new_encoded2.csv    header row; column 0 = tracklet name (e.g. 0001C1T0002),
                                                           then the 43 (MARS) / 36 (Duke) 0/1 columns in schema order
    DIR/train_name.txt | trainval_name.txt | base_train.txt    training tracklet names, one per line
    DIR/val_name.txt                                       optional; without it val is carved from train by identity
    DIR/test_name.txt | base_test.txt                      test tracklet names
    DIR/images | frames | pad_mars_dataset | pad_duke_dataset | pad_dataset
        /<tracklet name>/*.jpg                              one folder of frames per tracklet

The identity (pid) is the leading number of a tracklet name and the camera / tracklet number follow ``C`` / ``T``
(``0001C1T0002`` -> pid 1, camera 1, tracklet 2), as in the MARS naming. Frames are ordered by name, numbers by value.
The released MARS reader's attribute list swaps columns 1 and 8 (VTFPAR++); the data follows VTF's order, which is
the schema's, so columns are taken as they come.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.manifest import (
    REAL_DATASETS,
    Annotation,
    DatasetError,
    Manifest,
    Tracklet,
    attach_labels,
    natural_key,
    require_dir,
    require_file,
)
from data.schema import AttributeSchema, get_schema

LABEL_FILES = ("labels.csv", "new_encoded.csv", "new_encoded2.csv")
SPLIT_FILES = {"train": ("train_name.txt", "trainval_name.txt", "base_train.txt"), "val": ("val_name.txt",),
               "test": ("test_name.txt", "base_test.txt")}
IMAGE_DIRS = ("images", "frames", "pad_mars_dataset", "pad_duke_dataset", "pad_dataset")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
TRACK_NAME = re.compile(r"^(?P<pid>\d+)(?:C(?P<cam>\d+))?(?:T(?P<tracklet>\d+))?")


def _first(directory: Path, names: tuple[str, ...], *, dirs: bool = False) -> Path | None:
    found = [directory / n for n in names if (directory / n).is_dir() == dirs and (directory / n).exists()]
    return found[0] if found else None


def is_reencoded(directory: str | Path) -> bool:
    """True when ``directory`` has a label CSV and a training name list of the re-encoded layout."""
    directory = Path(directory)
    return _first(directory, LABEL_FILES) is not None and _first(directory, SPLIT_FILES["train"]) is not None


def _read_labels(path: Path, schema: AttributeSchema) -> dict:
    """``{track name: Annotation}`` from the label CSV; every value must be 0 or 1."""
    with open(require_file(path, "label CSV"), newline="", encoding="utf-8-sig", errors="replace") as fh:
        rows = [(n, r) for n, r in enumerate(csv.reader(fh), start=1) if any(r)]
    width, names = 1 + schema.num_columns, schema.column_names()
    if not rows or len(rows[0][1]) != width:
        got = len(rows[0][1]) if rows else 0
        raise DatasetError(f"{path}: expected a header and {width} columns (tracklet name + {schema.num_columns} "
                           f"{schema.name} labels), got {got}")
    annotations = {}
    for line, row in rows[1:]:
        if len(row) != width:
            raise DatasetError(f"{path}: line {line} has {len(row)} columns, expected {width}")
        bad = next((j for j, v in enumerate(row[1:]) if v.strip() not in ("0", "1")), None)
        if bad is not None:
            raise DatasetError(f"{path}: line {line}, column {names[bad]!r}: value {row[1 + bad]!r} is not 0 or 1")
        name = row[0].strip()
        if name in annotations:
            raise DatasetError(f"{path}: line {line}: tracklet {name!r} already on line {annotations[name].line}")
        annotations[name] = Annotation(line, np.array([int(v) for v in row[1:]], dtype=np.uint8))
    return annotations


def _read_split_lists(directory: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Tracklet names per split and the file each came from; a name in two splits is an error."""
    lists, files, seen = {}, {}, {}
    for split, candidates in SPLIT_FILES.items():
        path = _first(directory, candidates)
        if path is None:
            if split != "val":
                raise DatasetError(f"{directory}: missing {split} name list (one of {', '.join(candidates)})")
            continue
        lists[split] = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]
        files[split] = path.name
        for name in lists[split]:
            if seen.setdefault(name, split) != split:
                raise DatasetError(f"{path}: tracklet {name!r} is also in the {seen[name]} list")
    return lists, files


def _make_track(name: str, split: str, images: Path) -> Tracklet:
    match = TRACK_NAME.match(name)
    if match is None:
        raise DatasetError(f"{images / name}: tracklet name must start with its identity number (e.g. 0001C1T0002)")
    folder = require_dir(images / name, "tracklet")
    frames = sorted((p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not frames:
        raise DatasetError(f"{folder}: tracklet folder has no frames")
    cam, tracklet = (int(match[g]) if match[g] else -1 for g in ("cam", "tracklet"))
    return Tracklet(name, int(match["pid"]), cam, split, [f"{name}/{f}" for f in frames], tracklet)


def build_reencoded_manifest(dataset: str, directory: str | Path, *, allow_unmatched: bool = False,
                             progress: bool = False) -> Manifest:
    """Read the re-encoded layout into a manifest (``train``/``test``, plus ``val`` when a val list exists)."""
    directory = Path(directory).resolve()
    if dataset not in REAL_DATASETS:
        raise DatasetError(f"{directory}: dataset must be one of {REAL_DATASETS}, got {dataset!r}")
    schema = get_schema(dataset)
    label_path = _first(directory, LABEL_FILES)
    if label_path is None:
        raise DatasetError(f"{directory}: missing label CSV (one of {', '.join(LABEL_FILES)})")
    images = _first(directory, IMAGE_DIRS, dirs=True)
    if images is None:
        raise DatasetError(f"{directory}: missing image folder (one of {', '.join(IMAGE_DIRS)})")
    annotations = _read_labels(label_path, schema)
    lists, files = _read_split_lists(directory)
    names = [(n, s) for s, ns in lists.items() for n in ns]
    tracks = [_make_track(n, s, images) for n, s in tqdm(names, desc="tracklets", unit="tracklet",
                                                         disable=not progress)]
    kept, labels, match = attach_labels(tracks, annotations, key=lambda t: t.track_id, source=label_path,
                                        allow_unmatched=allow_unmatched, num_columns=schema.num_columns)
    report = {"format": "reencoded", "raw_dir": str(directory), "label_file": label_path.name,
              "split_files": files, "images_dir": images.name, **match}
    return Manifest(dataset, images, kept, labels, report)
