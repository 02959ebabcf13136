"""DukeMTMC-VID-Attribute from the files users download (DukeMTMC-VideoReID: Wu et al., CVPR 2018; attributes:
Chen et al., PRCV 2019).

Expected raw layout::

    RAW/train/<pid>/<tracklet>/<pid>_C<cam>_F<frame>_X<...>.jpg    e.g. train/0640/1000/0640_C1_F0087_X163321.jpg
    RAW/query/<pid>/<tracklet>/*.jpg
    RAW/gallery/<pid>/<tracklet>/*.jpg
    RAW/duke_attributes.csv    person_id, camera_id, tracklets_id, action, angle, [7 quality flags,] backpack,
                               shoulder bag, handbag, boots, gender, hat, shoes, top, downcolor, topcolor

Splits: train = ``train/``; test = ``query/`` + ``gallery/``. The released query tracklets are copies of gallery
tracklets (2,196 train / 2,636 test, the attribute paper's figures), so a (pid, camera, tracklet) present in both is
kept once (the gallery copy) and counted as ``query_in_gallery``.

Camera: parsed from the frame names, which in the release look like ``<pid>_C<cam>_F<frame>_X<...>.jpg``; every
frame of a tracklet must agree. When the names do not carry ``_C<cam>_``, the camera is taken from the one annotation
row with that (pid, tracklet); more than one such row is an error. The tracklet number is the folder name.
Frames are ordered by name with numbers compared by value (``F0087`` is frame 87).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

from data.manifest import (
    QUALITY_FLAGS,
    DatasetError,
    Manifest,
    RawField,
    Tracklet,
    attach_labels,
    natural_key,
    read_annotation_csv,
    require_dir,
    track_name,
)
from data.schema import DUKE

ANNOTATION_FILE = "duke_attributes.csv"
SPLIT_FOLDERS = (("train", "train"), ("test", "query"), ("test", "gallery"))  # (split, folder); gallery after query
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
IMAGE_NAME = re.compile(r"^(?P<pid>\d+)_C(?P<cam>\d+)_")

# Value columns of duke_attributes.csv in file order. NOTE: the file has bottom colour (8) before top colour (9);
# the schema has top colour first, so each field names its target group rather than relying on position.
_HEAD = (RawField("action", 5, "motion"), RawField("angle", 6, "pose"))
_TAIL = (RawField("backpack", 2, "backpack"), RawField("shoulder bag", 2, "shoulder bag"),
         RawField("handbag", 2, "hand bag"), RawField("boots", 2, "boots"), RawField("gender", 2, "female"),
         RawField("hat", 2, "hat"), RawField("shoes", 2, "light shoes"), RawField("top", 2, "top long"),
         RawField("downcolor", 8, "bottom colour"), RawField("topcolor", 9, "top colour"))
FIELDS = (*_HEAD, *QUALITY_FLAGS, *_TAIL)
FIELD_VARIANTS = [FIELDS, (*_HEAD, *_TAIL)]  # 22 columns in the released file; 15 when the flags are left out


def _int_folder(path: Path, what: str) -> int:
    if not path.name.isdigit():
        raise DatasetError(f"{path}: {what} folder name must be a number")
    return int(path.name)


def _camera_from_names(names: list[str], *, pid: int, folder: Path) -> int | None:
    """The camera all frame names agree on, or None when the names carry no ``<pid>_C<cam>_`` prefix."""
    parsed = [IMAGE_NAME.match(n) for n in names]
    if all(m is None for m in parsed):
        return None
    ids = {(int(m["pid"]), int(m["cam"])) if m else None for m in parsed}
    if len(ids) != 1 or next(iter(ids)) is None or next(iter(ids))[0] != pid:
        raise DatasetError(f"{folder}: frame names must all be {pid:04d}_C<cam>_... with one camera")
    return next(iter(ids))[1]


def _folder_track(folder: Path, *, pid: int, split: str, raw: Path) -> Tracklet:
    names = sorted((p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not names:
        raise DatasetError(f"{folder}: tracklet folder has no frames")
    tracklet = _int_folder(folder, "tracklet")
    cam = _camera_from_names(names, pid=pid, folder=folder)
    rel = folder.relative_to(raw).as_posix()
    frames = [f"{rel}/{n}" for n in names]
    return Tracklet("", pid, -1 if cam is None else cam, split, frames, tracklet)


def _scan_folder(raw: Path, split: str, folder_name: str, *, progress: bool) -> list[Tracklet]:
    """Every ``<folder>/<pid>/<tracklet>/`` of one release folder, identities and tracklets in numeric order."""
    folder = require_dir(raw / folder_name, f"Duke {folder_name}")
    pid_dirs = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    tracks = []
    for pid_dir in tqdm(pid_dirs, desc=f"Duke {folder_name}", unit="identity", disable=not progress):
        pid = _int_folder(pid_dir, "identity")
        for tdir in sorted((p for p in pid_dir.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
            tracks.append(_folder_track(tdir, pid=pid, split=split, raw=raw))
    return tracks


def _fill_cameras(tracks: list[Tracklet], annotations: dict, csv_path: Path) -> None:
    """Cameras the frame names did not give, from the single annotation row with the same (pid, tracklet)."""
    cams = defaultdict(list)
    for pid, cam, tracklet in annotations:
        cams[(pid, tracklet)].append(cam)
    for t in tracks:
        if t.camera == -1:
            found = cams.get((t.pid, t.tracklet), [])
            if len(found) > 1:
                raise DatasetError(f"{csv_path}: pid {t.pid} tracklet {t.tracklet} has rows for cameras {found}; "
                                   "frame names carry no camera, so the match is ambiguous")
            t.camera = found[0] if found else -1


def _merge(tracks: list[Tracklet], skipped: Counter) -> list[Tracklet]:
    """One tracklet per (pid, camera, tracklet); a query copy of a gallery tracklet is replaced by the gallery one."""
    by_key: dict[tuple, Tracklet] = {}
    for t in tracks:
        key = (t.pid, t.camera, t.tracklet)
        if key in by_key:
            if by_key[key].split != t.split:
                raise DatasetError(f"{t.frames[0]}: tracklet {key} (pid, camera, tracklet) is in both train and test")
            skipped["query_in_gallery"] += 1
        by_key[key] = t
        t.track_id = track_name(*key)
    return list(by_key.values())


def build_duke_manifest(raw: str | Path, *, allow_unmatched: bool = False, progress: bool = False) -> Manifest:
    """Read a raw DukeMTMC-VideoReID download into a manifest with ``train`` and ``test`` splits (no ``val`` yet)."""
    raw = Path(raw).resolve()
    csv_path = raw / ANNOTATION_FILE
    annotations, csv_info = read_annotation_csv(csv_path, FIELD_VARIANTS, DUKE)
    scanned = [t for split, folder in SPLIT_FOLDERS for t in _scan_folder(raw, split, folder, progress=progress)]
    cameras_from_names = sum(t.camera != -1 for t in scanned)
    _fill_cameras(scanned, annotations, csv_path)
    skipped: Counter = Counter()
    tracks = _merge(scanned, skipped)
    kept, labels, match = attach_labels(tracks, annotations, key=lambda t: (t.pid, t.camera, t.tracklet),
                                        source=csv_path, allow_unmatched=allow_unmatched,
                                        num_columns=DUKE.num_columns)
    report = {"format": "raw", "raw_dir": str(raw), "annotations": csv_info, **match,
              "query_in_gallery": skipped["query_in_gallery"],
              "cameras_from_csv": len(scanned) - cameras_from_names}
    return Manifest("duke", raw, kept, labels, report)
