"""MARS-Attribute from the files users download (MARS: Zheng et al., ECCV 2016; attributes: Chen et al., PRCV 2019).

Expected raw layout (the standard MARS release plus the attribute file)::

    RAW/bbox_train/<pid>/<pid>C<cam>T<tracklet>F<frame>.jpg     e.g. bbox_train/0001/0001C1T0002F005.jpg
    RAW/bbox_test/<pid>/...                                      pid folders 0000 (distractors) and 00-1 (junk)
    RAW/info/train_name.txt, info/test_name.txt                  image names, one per line
    RAW/info/tracks_train_info.mat, info/tracks_test_info.mat    (N, 4): start, end (1-based, inclusive, into the
                                                                 name list), pid, camera
    RAW/mars_attributes.csv                                      person_id, camera_id, tracklets_id, 21 class indices

A tracklet is matched to its annotation row on (pid, camera, tracklet number parsed from the image names).
Junk tracklets (pid -1) are skipped and counted; distractors (pid 0) are skipped and counted unless annotated.
Frames are ordered by the frame number in their names (``F<frame>``), not by their position in the name list.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from data.manifest import (
    QUALITY_FLAGS,
    DatasetError,
    Manifest,
    RawField,
    Tracklet,
    attach_labels,
    read_annotation_csv,
    require_dir,
    require_file,
    track_name,
)
from data.schema import MARS

ANNOTATION_FILE = "mars_attributes.csv"
SPLIT_FOLDERS = {"train": "bbox_train", "test": "bbox_test"}
JUNK_PID, DISTRACTOR_PID = -1, 0
IMAGE_NAME = re.compile(r"^(?P<pid>\d+)C(?P<cam>\d+)T(?P<tracklet>\d+)F(?P<frame>\d+)\.\w+$")

# The 21 value columns of mars_attributes.csv, in file order, and the schema group each one fills (Chen et al.).
_HEAD = (RawField("action", 5, "motion"), RawField("angle", 6, "pose"))
_TAIL = (RawField("upcolor", 9, "top colour"), RawField("downcolor", 10, "bottom colour"), RawField("age", 4, "age"),
         RawField("up", 2, "top short"), RawField("down", 2, "bottom short"), RawField("bag", 2, "shoulder bag"),
         RawField("backpack", 2, "backpack"), RawField("hat", 2, "hat"), RawField("handbag", 2, "hand bag"),
         RawField("hair", 2, "long hair"), RawField("gender", 2, "female"), RawField("btype", 2, "bottom skirt"))
FIELDS = (*_HEAD, *QUALITY_FLAGS, *_TAIL)
FIELD_VARIANTS = [FIELDS, (*_HEAD, *_TAIL)]  # the released file has the quality flags; a trimmed copy may not


def read_name_list(path: Path) -> list[str]:
    """Image names of ``info/<split>_name.txt``, one per non-blank line."""
    with open(require_file(path, "image name list"), encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def load_track_info(path: Path) -> np.ndarray:
    """The single (N, 4) integer array of a ``tracks_<split>_info.mat`` file: start, end, pid, camera."""
    try:
        content = scipy.io.loadmat(str(require_file(path, "track info .mat file")))
    except (ValueError, OSError, TypeError) as err:
        raise DatasetError(f"{path}: cannot read .mat file ({err})") from None
    arrays = [v for k, v in content.items() if not k.startswith("__")]
    if len(arrays) != 1:
        raise DatasetError(f"{path}: expected exactly one array, found {len(arrays)}")
    info = np.asarray(arrays[0])
    if info.ndim != 2 or info.shape[1] != 4:
        raise DatasetError(f"{path}: expected an (N, 4) array (start, end, pid, camera), got shape {info.shape}")
    return info.astype(np.int64)


class _FolderListing:
    """Lists each identity folder once, so checking a million frame files costs one ``listdir`` per identity."""

    def __init__(self, image_dir: Path):
        self.image_dir = image_dir
        self._cache: dict[str, set[str]] = {}

    def check(self, folder: str, name: str, *, listed_in: Path) -> None:
        if folder not in self._cache:
            path = require_dir(self.image_dir / folder, "identity")
            self._cache[folder] = set(os.listdir(path))
        if name not in self._cache[folder]:
            raise DatasetError(f"{self.image_dir / folder / name}: missing frame image (listed in {listed_in})")


def _parse_names(names: list[str], *, pid: int, cam: int, where: str) -> tuple[str, int, list[tuple[int, str]]]:
    """(identity folder, tracklet number, [(frame number, name)]) after checking names agree with the .mat row."""
    parsed = [IMAGE_NAME.match(n) for n in names]
    bad = next((n for n, m in zip(names, parsed, strict=True) if m is None), None)
    if bad is not None:
        raise DatasetError(f"{where}: image name {bad!r} is not <pid>C<cam>T<tracklet>F<frame>.jpg")
    ids = {(m["pid"], int(m["cam"]), int(m["tracklet"])) for m in parsed}
    folder, name_cam, tracklet = ids.pop()
    if ids or int(folder) != pid or name_cam != cam:
        raise DatasetError(f"{where}: image names {names[0]!r}..{names[-1]!r} do not all belong to pid {pid}, "
                           f"camera {cam}, one tracklet")
    return folder, tracklet, sorted((int(m["frame"]), n) for m, n in zip(parsed, names, strict=True))


def _make_track(names: list[str], row: np.ndarray, *, split: str, where: str, name_path: Path,
                listing: _FolderListing) -> Tracklet:
    start, end, pid, cam = (int(v) for v in row)
    if not 1 <= start <= end <= len(names):
        raise DatasetError(f"{where}: frames {start}..{end} give a tracklet with no frames or run past the "
                           f"{len(names)} names of {name_path}")
    folder, tracklet, frames = _parse_names(names[start - 1:end], pid=pid, cam=cam, where=where)
    for _, name in frames:
        listing.check(folder, name, listed_in=name_path)
    paths = [f"{SPLIT_FOLDERS[split]}/{folder}/{name}" for _, name in frames]
    return Tracklet(track_name(pid, cam, tracklet), pid, cam, split, paths, tracklet)


def _split_tracks(raw: Path, split: str, *, annotated: set, skipped: Counter, progress: bool) -> list[Tracklet]:
    """Tracklets of one split in .mat row order; junk and unannotated distractors are counted in ``skipped``."""
    name_path = raw / "info" / f"{split}_name.txt"
    names = read_name_list(name_path)
    info_path = raw / "info" / f"tracks_{split}_info.mat"
    info = load_track_info(info_path)
    listing = _FolderListing(require_dir(raw / SPLIT_FOLDERS[split], f"MARS {split} image"))
    tracks = []
    for row_no, row in enumerate(tqdm(info, desc=f"MARS {split}", unit="tracklet", disable=not progress), start=1):
        if row[2] == JUNK_PID:
            skipped["junk"] += 1
            continue
        track = _make_track(names, row, split=split, where=f"{info_path}: row {row_no}", name_path=name_path,
                            listing=listing)
        if track.pid == DISTRACTOR_PID and (track.pid, track.camera, track.tracklet) not in annotated:
            skipped["distractors"] += 1
            continue
        tracks.append(track)
    return tracks


def build_mars_manifest(raw: str | Path, *, allow_unmatched: bool = False, progress: bool = False) -> Manifest:
    """Read a raw MARS download into a manifest with ``train`` and ``test`` splits (no ``val`` yet)."""
    raw = Path(raw).resolve()
    csv_path = raw / ANNOTATION_FILE
    annotations, csv_info = read_annotation_csv(csv_path, FIELD_VARIANTS, MARS)
    skipped: Counter = Counter()
    tracks = [t for split in SPLIT_FOLDERS
              for t in _split_tracks(raw, split, annotated=set(annotations), skipped=skipped, progress=progress)]
    duplicate = next((k for k, n in Counter(t.track_id for t in tracks).items() if n > 1), None)
    if duplicate is not None:
        raise DatasetError(f"{raw / 'info'}: tracklet {duplicate} is listed more than once")
    kept, labels, match = attach_labels(tracks, annotations, key=lambda t: (t.pid, t.camera, t.tracklet),
                                        source=csv_path, allow_unmatched=allow_unmatched,
                                        num_columns=MARS.num_columns)
    report = {"format": "raw", "raw_dir": str(raw), "annotations": csv_info, **match,
              "junk_skipped": skipped["junk"], "distractors_skipped": skipped["distractors"]}
    return Manifest("mars", raw, kept, labels, report)
