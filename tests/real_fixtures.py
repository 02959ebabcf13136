"""Tiny on-disk copies of the real dataset formats (MARS, DukeMTMC-VideoReID, the re-encoded layout).

Frames are 8x4 (H x W) JPEGs whose red channel encodes the frame's position in its tracklet (``RED_STEP * k``), so a
test can tell which frames a clip holds. Raw annotation values are drawn per tracklet from a seeded generator; the
one-hot encoding used for the re-encoded layout is written out here independently of ``data/`` (explicit columns).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

RED_STEP = 40
FRAME_SIZE = (4, 8)  # PIL (width, height)

# (raw field, number of classes) in file order; quality flags carry no target column.
MARS_FIELDS = [("action", 5), ("angle", 6), *[(f, 2) for f in ("occlusion", "cut", "multi-person", "back-dominant",
               "target-change", "target-miss", "wrong-target")], ("upcolor", 9), ("downcolor", 10), ("age", 4),
               *[(f, 2) for f in ("up", "down", "bag", "backpack", "hat", "handbag", "hair", "gender", "btype")]]
DUKE_FIELDS = [("action", 5), ("angle", 6), *[(f, 2) for f in ("occlusion", "cut", "multi-person", "back-dominant",
               "target-change", "target-miss", "wrong-target")],
               *[(f, 2) for f in ("backpack", "shoulder bag", "handbag", "boots", "gender", "hat", "shoes", "top")],
               ("downcolor", 8), ("topcolor", 9)]
# Schema column of each field: multi-class -> first column of the group, binary -> its column (vtfpar.md section 4).
MARS_COLUMNS = {"up": 0, "down": 1, "bag": 2, "backpack": 3, "hat": 4, "handbag": 5, "hair": 6, "gender": 7,
                "btype": 8, "angle": 9, "action": 15, "upcolor": 20, "downcolor": 29, "age": 39}
DUKE_COLUMNS = {"backpack": 0, "shoulder bag": 1, "handbag": 2, "boots": 3, "gender": 4, "hat": 5, "shoes": 6,
                "top": 7, "angle": 8, "action": 14, "topcolor": 19, "downcolor": 28}
ID_HEADER = ["person_id", "camera_id", "tracklets_id"]


def encode(values: list[int], fields: list[tuple[str, int]], columns: dict[str, int], width: int) -> list[int]:
    """Raw class indices -> one-hot row, written independently of the code under test."""
    row = [0] * width
    for (name, classes), v in zip(fields, values, strict=True):
        if name in columns:
            if classes == 2:
                row[columns[name]] = v
            else:
                row[columns[name] + v] = 1
    return row


def raw_values(key: tuple[int, int, int], fields: list[tuple[str, int]]) -> list[int]:
    rng = np.random.default_rng(list(key))
    return [int(rng.integers(0, n)) for _, n in fields]


def write_frame(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (min(255, RED_STEP * k), 100, 50)
    Image.new("RGB", FRAME_SIZE, colour).save(path, quality=95)


def write_csv(path: Path, rows: list[list], header: list[str] | None) -> None:
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        if header:
            out.writerow(header)
        out.writerows(rows)


@dataclass
class RawFixture:
    """A raw download and what the tests expect from it: annotation values and ordered frames per tracklet."""

    raw: Path
    values: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)  # (pid, cam, tracklet) -> raw values
    frames: dict[str, list[str]] = field(default_factory=dict)  # track name -> frame paths relative to raw, ordered
    splits: dict[str, str] = field(default_factory=dict)  # track name -> "train" / "test"

    def name(self, key: tuple[int, int, int]) -> str:
        return f"{key[0]:04d}C{key[1]}T{key[2]:04d}"


# ---------------------------------------------------------------------------------------------------------------------
# MARS

MARS_TRAIN_PIDS, MARS_TEST_PIDS, MARS_CAMS, MARS_TRACKLETS = (1, 2, 3, 4), (5, 6), (1, 2), (1, 2)
HAND_KEY = (1, 1, 1)  # its values are set by hand so tests can check named columns
HAND_VALUES = {"action": 1, "angle": 2, "upcolor": 3, "downcolor": 8, "age": 2, "up": 1, "gender": 1}


def _mars_frame_numbers(pid: int, tracklet: int) -> list[int]:
    """3-5 frame numbers with gaps and one above 9, so numeric and position order are both exercised."""
    return [1 + 4 * k for k in range(3 + (pid + tracklet) % 3)]


def _mars_split(raw: Path, fx: RawFixture, split: str, pids: tuple[int, ...], extra: list[tuple]) -> None:
    """Frames, name list and (N, 4) .mat of one split; ``extra`` adds unannotated (folder, pid, cam, tracklet)."""
    folder = "bbox_train" if split == "train" else "bbox_test"
    names, info = [], []
    todo = [(f"{p:04d}", p, c, t) for p in pids for c in MARS_CAMS for t in MARS_TRACKLETS] + extra
    for pid_folder, pid, cam, tracklet in todo:
        track = [f"{pid_folder}C{cam}T{tracklet:04d}F{n:03d}.jpg" for n in _mars_frame_numbers(max(pid, 1), tracklet)]
        for k, name in enumerate(track):
            write_frame(raw / folder / pid_folder / name, k)
        if pid > 0:
            key = (pid, cam, tracklet)
            fx.frames[fx.name(key)] = [f"{folder}/{pid_folder}/{n}" for n in track]
            fx.splits[fx.name(key)] = split
        listed = track[::-1] if tracklet == 2 else track  # name-list order is not frame order for tracklet 2
        info.append([len(names) + 1, len(names) + len(listed), pid, cam])
        names += listed
    (raw / "info").mkdir(parents=True, exist_ok=True)
    (raw / "info" / f"{split}_name.txt").write_text("\n".join(names) + "\n")
    scipy.io.savemat(raw / "info" / f"tracks_{split}_info.mat", {f"track_{split}_info": np.array(info, np.float64)})


def build_mars_raw(root: Path, *, header: bool = True) -> RawFixture:
    """MARS: 4 train + 2 test identities x 2 cameras x 2 tracklets (24 annotated), one junk and one distractor."""
    raw = root / "mars"
    fx = RawFixture(raw)
    _mars_split(raw, fx, "train", MARS_TRAIN_PIDS, [])
    _mars_split(raw, fx, "test", MARS_TEST_PIDS, [("00-1", -1, 1, 1), ("0000", 0, 2, 1)])
    for p in MARS_TRAIN_PIDS + MARS_TEST_PIDS:
        for c in MARS_CAMS:
            for t in MARS_TRACKLETS:
                fx.values[(p, c, t)] = raw_values((p, c, t), MARS_FIELDS)
    fx.values[HAND_KEY] = [HAND_VALUES.get(name, 0) for name, _ in MARS_FIELDS]
    write_mars_csv(fx, header=header)
    return fx


def write_mars_csv(fx: RawFixture, *, header: bool = True, rows: list[list[int]] | None = None) -> Path:
    rows = rows if rows is not None else [[*k, *v] for k, v in fx.values.items()]
    path = fx.raw / "mars_attributes.csv"
    write_csv(path, rows, ID_HEADER + [n for n, _ in MARS_FIELDS] if header else None)
    return path


def make_mars_fixture(root: Path) -> Path:
    """A raw MARS folder that ``python -m data.prepare mars`` turns into non-empty train / val / test splits."""
    return build_mars_raw(Path(root)).raw


def mars_one_hot(fx: RawFixture, key: tuple[int, int, int]) -> list[int]:
    return encode(fx.values[key], MARS_FIELDS, MARS_COLUMNS, 43)


# ---------------------------------------------------------------------------------------------------------------------
# Duke

DUKE_TRAIN_PIDS, DUKE_TEST_PIDS = (1, 2, 3), (4, 5)
DUKE_HAND_KEY = (4, 2, 1)  # camera 1 + (pid + tracklet) % 2
DUKE_HAND_VALUES = {"angle": 3, "downcolor": 1, "topcolor": 2, "shoes": 1, "top": 1}


def _duke_frame_name(pid: int, cam: int, n: int, with_camera: bool) -> str:
    return f"{pid:04d}_C{cam}_F{n:04d}_X{1000 + n}.jpg" if with_camera else f"F{n:04d}.jpg"


def _duke_tracklet(raw: Path, fx: RawFixture, *, folder: str, pid: int, tracklet: int, with_camera: bool) -> None:
    cam = 1 + (pid + tracklet) % 2
    key = (pid, cam, tracklet)
    frame_numbers = [2, 9, 10, 31][: 2 + (pid + tracklet) % 3]  # 9 < 10 checks numeric order of unpadded names
    names = [_duke_frame_name(pid, cam, n, with_camera) for n in frame_numbers]
    for k, name in enumerate(names):
        write_frame(raw / folder / f"{pid:04d}" / f"{tracklet:04d}" / name, k)
    if folder != "query":
        fx.frames[fx.name(key)] = [f"{folder}/{pid:04d}/{tracklet:04d}/{n}" for n in names]
        fx.splits[fx.name(key)] = "train" if folder == "train" else "test"
        fx.values[key] = raw_values(key, DUKE_FIELDS)


def build_duke_raw(root: Path, *, with_camera: bool = True, quality_flags: bool = True) -> RawFixture:
    """Duke: 3 train + 2 test identities x 2 tracklets; each test identity's first tracklet is also in query/."""
    raw = root / "duke"
    fx = RawFixture(raw)
    for pid in DUKE_TRAIN_PIDS + DUKE_TEST_PIDS:
        for tracklet in (1, 2):
            folder = "train" if pid in DUKE_TRAIN_PIDS else "gallery"
            _duke_tracklet(raw, fx, folder=folder, pid=pid, tracklet=tracklet, with_camera=with_camera)
            if folder == "gallery" and tracklet == 1:
                _duke_tracklet(raw, fx, folder="query", pid=pid, tracklet=tracklet, with_camera=with_camera)
    fx.values[DUKE_HAND_KEY] = [DUKE_HAND_VALUES.get(name, 0) for name, _ in DUKE_FIELDS]
    write_duke_csv(fx, quality_flags=quality_flags)
    return fx


def write_duke_csv(fx: RawFixture, *, quality_flags: bool = True) -> Path:
    keep = [i for i, (n, _) in enumerate(DUKE_FIELDS) if quality_flags or n in DUKE_COLUMNS]
    rows = [[*k, *[v[i] for i in keep]] for k, v in fx.values.items()]
    path = fx.raw / "duke_attributes.csv"
    write_csv(path, rows, ID_HEADER + [DUKE_FIELDS[i][0] for i in keep])
    return path


def duke_one_hot(fx: RawFixture, key: tuple[int, int, int]) -> list[int]:
    return encode(fx.values[key], DUKE_FIELDS, DUKE_COLUMNS, 36)


# ---------------------------------------------------------------------------------------------------------------------
# the authors' re-encoded layout


def build_reencoded(root: Path, fx: RawFixture, *, one_hot, num_columns: int, val: bool = False) -> Path:
    """labels.csv + train_name.txt / test_name.txt (+ val_name.txt) + images/<track>/ from a raw fixture's tracklets.

    With ``val`` the first training identity's tracklets go to ``val_name.txt``.
    """
    out = root / "reencoded"
    names = sorted(fx.frames)
    for name in names:
        for k, frame in enumerate(fx.frames[name]):
            write_frame(out / "images" / name / Path(frame).name, k)
    keys = {fx.name(k): k for k in fx.values}
    write_csv(out / "labels.csv", [[n, *one_hot(fx, keys[n])] for n in names],
              ["track_name", *[f"c{j}" for j in range(num_columns)]])
    train = [n for n in names if fx.splits[n] == "train"]
    first_pid = train[0][:4]
    lists = {"train": [n for n in train if not (val and n.startswith(first_pid))],
             "test": [n for n in names if fx.splits[n] == "test"]}
    if val:
        lists["val"] = [n for n in train if n.startswith(first_pid)]
    for split, items in lists.items():
        (out / f"{split}_name.txt").write_text("\n".join(items) + "\n")
    return out
