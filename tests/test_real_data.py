"""Real-dataset preparation and loading on tiny fixtures of the MARS, Duke and re-encoded formats."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from data.manifest import DatasetError, read_manifest
from data.prepare import main as prepare_main
from data.prepare import prepare
from data.schema import DUKE, MARS
from data.transforms import CLIP_MEAN, CLIP_STD
from data.video_dataset import ManifestVideoDataset, load_real_split
from tests.real_fixtures import (
    DUKE_HAND_KEY,
    HAND_KEY,
    MARS_FIELDS,
    RED_STEP,
    RawFixture,
    build_duke_raw,
    build_mars_raw,
    build_reencoded,
    duke_one_hot,
    mars_one_hot,
    write_frame,
    write_mars_csv,
)


def _manifest_rows(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "manifest.csv", newline="") as fh:
        return {row["track_id"]: row for row in csv.DictReader(fh)}


def _labels(row: dict[str, str], schema) -> list[int]:
    return [int(row[c]) for c in schema.column_names()]


@pytest.fixture(scope="module")
def mars(tmp_path_factory) -> RawFixture:
    return build_mars_raw(tmp_path_factory.mktemp("mars_raw"))


@pytest.fixture(scope="module")
def mars_root(mars, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mars_prepared")
    assert prepare_main(["mars", "--raw", str(mars.raw), "--out", str(out)]) == 0
    return out


@pytest.fixture
def mars_copy(tmp_path) -> RawFixture:
    return build_mars_raw(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# MARS raw


def test_mars_tracklets_splits_and_report(mars, mars_root):
    rows = _manifest_rows(mars_root)
    assert sorted(rows) == sorted(mars.frames)  # 24 annotated; junk (pid -1) and distractor (pid 0) skipped
    assert len(rows) == 24
    report = json.loads((mars_root / "prepare_report.json").read_text())
    assert report["junk_skipped"] == 1 and report["distractors_skipped"] == 1
    assert report["tracklets"]["train"] + report["tracklets"]["val"] == 16 and report["tracklets"]["test"] == 8
    assert report["frames_root"] == str(mars.raw.resolve())
    assert not report["matches_published"] and "train: 16 tracklets, published 8298" in report["warnings"]
    assert all((rows[n]["split"] == "test") == (mars.splits[n] == "test") for n in rows)
    assert {rows[n]["split"] for n in rows if mars.splits[n] == "train"} == {"train", "val"}


def test_mars_frame_paths_in_frame_order(mars, mars_root):
    manifest = read_manifest(mars_root)
    by_id = {t.track_id: t for t in manifest.tracks}
    for name, frames in mars.frames.items():
        assert by_id[name].frames == frames  # tracklet 2 is listed in reverse in the name list: sorted by F<frame>
        assert int(_manifest_rows(mars_root)[name]["num_frames"]) == len(frames)
    assert by_id["0001C1T0002"].frames == ["bbox_train/0001/0001C1T0002F001.jpg",
                                           "bbox_train/0001/0001C1T0002F005.jpg",
                                           "bbox_train/0001/0001C1T0002F009.jpg"]
    assert all((manifest.frames_root / p).is_file() for t in manifest.tracks for p in t.frames)


def test_mars_labels_column_by_column(mars, mars_root):
    rows = _manifest_rows(mars_root)
    names = MARS.column_names()
    hand = _labels(rows["0001C1T0001"], MARS)
    # action 1 running, angle 2 lateral, upcolor 3 blue, downcolor 8 brown, age 2 adult, up=1, gender=1
    assert [names[j] for j, v in enumerate(hand) if v] == [
        "top short", "female", "pose lateral", "motion running", "top colour blue", "bottom colour brown",
        "age adult"]
    assert [j for j, v in enumerate(hand) if v] == [0, 7, 11, 16, 23, 37, 41]
    for key in mars.values:
        assert _labels(rows[mars.name(key)], MARS) == mars_one_hot(mars, key), mars.name(key)


def test_mars_csv_without_header_gives_same_labels(tmp_path, mars, mars_root):
    fx = build_mars_raw(tmp_path / "a", header=False)
    assert not (fx.raw / "mars_attributes.csv").read_text().startswith("person_id")
    prepare("mars", fx.raw, tmp_path / "out")
    a, b = _manifest_rows(mars_root), _manifest_rows(tmp_path / "out")
    assert {k: _labels(v, MARS) for k, v in a.items()} == {k: _labels(v, MARS) for k, v in b.items()}


def test_val_split_by_identity_and_deterministic(mars, tmp_path):
    splits = {}
    for seed in (0, 0, 1, 2, 3):
        m = prepare("mars", mars.raw, tmp_path / f"s{seed}", val_fraction=0.25, seed=seed)
        val = {t.pid for t in m.tracks if t.split == "val"}
        train = {t.pid for t in m.tracks if t.split == "train"}
        assert len(val) == 1 and not val & train and val | train == {1, 2, 3, 4}
        assert {t.split for t in m.tracks if t.pid in (5, 6)} == {"test"}
        assert splits.setdefault(seed, val) == val  # same seed -> same identities
    assert len({frozenset(v) for v in splits.values()}) > 1  # the seed matters
    m = prepare("mars", mars.raw, tmp_path / "none", val_fraction=0.0)
    assert m.split_counts()["val"] == 0


# ---------------------------------------------------------------------------------------------------------------------
# Duke raw


def test_duke_prepare(tmp_path):
    fx = build_duke_raw(tmp_path)
    m = prepare("duke", fx.raw, tmp_path / "out")
    by_id = {t.track_id: t for t in m.tracks}
    assert sorted(by_id) == sorted(fx.frames) and len(by_id) == 10
    assert m.report["query_in_gallery"] == 2 and m.split_counts()["test"] == 4
    assert by_id["0001C2T0002"].camera == 2 and by_id["0001C2T0002"].frames[0].startswith("train/0001/0002/")
    assert by_id["0004C2T0001"].frames == fx.frames["0004C2T0001"]  # gallery copy, frames 2, 9, 10, 31 in order
    assert [Path(p).name[8:13] for p in by_id["0004C2T0001"].frames] == ["F0002", "F0009", "F0010", "F0031"]
    rows = _manifest_rows(tmp_path / "out")
    hand = _labels(rows["0004C2T0001"], DUKE)
    # angle 3 lateral-back, downcolor 1 white (bottom), topcolor 2 red (top), shoes=1, top=1; raw has bottom first
    assert [DUKE.column_names()[j] for j, v in enumerate(hand) if v] == [
        "light shoes", "top long", "pose lateral-back", "motion walking", "top colour red", "bottom colour white"]
    for key in fx.values:
        assert _labels(rows[fx.name(key)], DUKE) == duke_one_hot(fx, key)
    assert DUKE_HAND_KEY in fx.values


def test_duke_camera_from_csv_and_csv_without_flags(tmp_path):
    fx = build_duke_raw(tmp_path, with_camera=False, quality_flags=False)
    assert len(next(csv.reader(open(fx.raw / "duke_attributes.csv")))) == 15
    m = prepare("duke", fx.raw, tmp_path / "out")
    assert m.report["cameras_from_csv"] == 12 and sorted(t.track_id for t in m.tracks) == sorted(fx.frames)
    rows = _manifest_rows(tmp_path / "out")
    for key in fx.values:
        assert _labels(rows[fx.name(key)], DUKE) == duke_one_hot(fx, key)


# ---------------------------------------------------------------------------------------------------------------------
# re-encoded layout


def test_reencoded_routes_match_raw(mars, mars_root, tmp_path):
    enc = build_reencoded(tmp_path, mars, one_hot=mars_one_hot, num_columns=43)
    raw_rows = _manifest_rows(mars_root)
    prepare("mars", enc, tmp_path / "out", fmt="reencoded")
    enc_rows = _manifest_rows(tmp_path / "out")
    assert {k: _labels(v, MARS) for k, v in enc_rows.items()} == {k: _labels(v, MARS) for k, v in raw_rows.items()}
    assert {k: v["split"] for k, v in enc_rows.items()} == {k: v["split"] for k, v in raw_rows.items()}
    direct = load_real_split("mars", enc, "test", num_frames=2, image_size=8, train=False)  # no prepare step
    assert sorted(direct.track_ids) == sorted(n for n in mars.frames if mars.splits[n] == "test")
    for i, name in enumerate(direct.track_ids):
        assert direct.labels[i].tolist() == _labels(raw_rows[name], MARS)
        assert [p.name for p in direct.frame_paths(i)] == [Path(p).name for p in mars.frames[name]]


def test_reencoded_val_list_is_used(mars, tmp_path):
    enc = build_reencoded(tmp_path, mars, one_hot=mars_one_hot, num_columns=43, val=True)
    val = load_real_split("mars", enc, "val", num_frames=2, image_size=8, train=False)
    assert set(val.pids.tolist()) == {1} and len(val) == 4


# ---------------------------------------------------------------------------------------------------------------------
# loader


def test_dataset_items(mars_root, mars):
    ds = load_real_split("mars", mars_root, "test", num_frames=3, image_size=16, train=False)
    assert len(ds) == 8 and ds.labels.shape == (8, 43) and ds.labels.dtype == np.float32
    assert ds.schema is MARS
    clip, label = ds[0]
    assert clip.shape == (3, 3, 16, 16) and clip.dtype == torch.float32
    assert label.shape == (43,) and label.dtype == torch.float32 and torch.equal(label, torch.from_numpy(ds.labels[0]))
    n = len(mars.frames[ds.track_ids[0]])
    expected = [int((2 * k + 1) * n / 6) for k in range(3)]  # segment centres of 3 segments over n frames
    # un-normalised red channel per frame, over the person: the 8x4 frame fills columns 4-11 of the padded 16x16
    red = (clip * CLIP_STD + CLIP_MEAN)[:, 0, :, 4:12].mean(dim=(1, 2)) * 255
    assert torch.allclose(red, torch.tensor([RED_STEP * k for k in expected], dtype=torch.float32), atol=4)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 3, 3, 16, 16) and batch[1].shape == (4, 43)


def test_training_draws_are_ordered_and_vary(mars_root):
    ds = ManifestVideoDataset(mars_root, "train", num_frames=3, image_size=8, train=True, sample_seed=0)
    draws = [ds.frame_indices(0) for _ in range(20)]
    assert all(d == sorted(d) for d in draws) and len({tuple(d) for d in draws}) > 1
    again = ManifestVideoDataset(mars_root, "train", num_frames=3, image_size=8, train=True, sample_seed=0)
    assert [again.frame_indices(0) for _ in range(20)] == draws  # reproducible


# ---------------------------------------------------------------------------------------------------------------------
# bad input: one clear error naming the file


def _raises(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as err:
        fn(*args, **kwargs)
    assert match in str(err.value), str(err.value)
    return str(err.value)


@pytest.mark.parametrize("victim", ["info/tracks_train_info.mat", "info/test_name.txt", "mars_attributes.csv",
                                    "bbox_test", "bbox_train/0003/0003C2T0001F005.jpg"])
def test_missing_files(mars_copy, tmp_path, victim):
    path = mars_copy.raw / victim
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    _raises(str(path), prepare, "mars", mars_copy.raw, tmp_path / "out")


def test_wrong_column_count(mars_copy, tmp_path):
    rows = [[*k, *v, 0] for k, v in mars_copy.values.items()]
    path = write_mars_csv(mars_copy, rows=rows, header=False)
    msg = _raises(str(path), prepare, "mars", mars_copy.raw, tmp_path / "out")
    assert "expected 24 or 17 columns" in msg and "got 25" in msg
    write_mars_csv(mars_copy, rows=rows)  # a 24-name header, then rows of 25
    _raises(f"{path}: line 2 has 25 columns, expected 24", prepare, "mars", mars_copy.raw, tmp_path / "out")


def test_out_of_range_class_index(mars_copy, tmp_path):
    rows = [[*k, *v] for k, v in mars_copy.values.items()]
    rows[3][3 + [n for n, _ in MARS_FIELDS].index("angle")] = 6  # angle has 6 classes: 0..5
    path = write_mars_csv(mars_copy, rows=rows)
    _raises(f"{path}: line 5, column 'angle': class index 6 out of range 0..5", prepare, "mars", mars_copy.raw,
            tmp_path / "out")


def test_tracklet_with_no_frames(mars_copy, tmp_path):
    path = mars_copy.raw / "info" / "tracks_train_info.mat"
    info = scipy.io.loadmat(path)["track_train_info"]
    info[2, 1] = info[2, 0] - 1  # end before start
    scipy.io.savemat(path, {"track_train_info": info})
    _raises(f"{path}: row 3", prepare, "mars", mars_copy.raw, tmp_path / "out")


def test_duke_empty_tracklet_folder(tmp_path):
    fx = build_duke_raw(tmp_path)
    folder = fx.raw / "train" / "0002" / "0001"
    for f in folder.iterdir():
        f.unlink()
    _raises(f"{folder}: tracklet folder has no frames", prepare, "duke", fx.raw, tmp_path / "out")


def test_unmatched_annotation(mars_copy, tmp_path):
    rows = [[*k, *v] for k, v in mars_copy.values.items()] + [[9, 1, 1, *mars_copy.values[HAND_KEY]]]
    path = write_mars_csv(mars_copy, rows=rows)
    _raises(f"{path}: 1 annotations match no tracklet (first: line 26: pid 9 camera 1 tracklet 1)", prepare, "mars",
            mars_copy.raw, tmp_path / "out")
    m = prepare("mars", mars_copy.raw, tmp_path / "out", allow_unmatched=True)
    assert m.report["unmatched_annotations"] == 1 and len(m.tracks) == 24


def test_unannotated_tracklet(mars_copy, tmp_path):
    rows = [[*k, *v] for k, v in mars_copy.values.items() if k != (5, 2, 1)]
    path = write_mars_csv(mars_copy, rows=rows)
    _raises(f"{path}: 1 tracklets have no annotation (first: 0005C2T0001)", prepare, "mars", mars_copy.raw,
            tmp_path / "out")
    m = prepare("mars", mars_copy.raw, tmp_path / "out", allow_unmatched=True)
    assert m.report["unannotated_tracklets"] == 1 and "0005C2T0001" not in {t.track_id for t in m.tracks}


def test_unreadable_image_named_at_load(mars_copy, tmp_path):
    prepare("mars", mars_copy.raw, tmp_path / "out")
    ds = load_real_split("mars", tmp_path / "out", "test", num_frames=8, image_size=8, train=False)
    bad = ds.frame_paths(0)[1]
    bad.write_bytes(b"not a jpeg")
    _raises(f"{bad}: cannot read image", ds.__getitem__, 0)


def test_reencoded_bad_inputs(mars, tmp_path):
    enc = build_reencoded(tmp_path, mars, one_hot=mars_one_hot, num_columns=43)
    lines = (enc / "labels.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[12] = "2"  # column 11 of the labels: pose lateral
    (enc / "labels.csv").write_text("\n".join([*lines[:2], ",".join(cells), *lines[3:]]) + "\n")
    _raises(f"{enc / 'labels.csv'}: line 3, column 'pose lateral': value '2' is not 0 or 1", load_real_split,
            "mars", enc, "train", num_frames=2, image_size=8, train=False)
    (enc / "labels.csv").write_text("\n".join(lines) + "\n")
    empty = enc / "images" / "0005C1T0001"
    shutil.rmtree(empty)
    empty.mkdir()
    _raises(f"{empty}: tracklet folder has no frames", prepare, "mars", enc, tmp_path / "o", fmt="reencoded")


def test_neither_layout_is_a_clear_error(mars, mars_root, tmp_path):
    _raises("prepared for 'mars', not 'duke'", load_real_split, "duke", mars_root, "train", num_frames=2,
            image_size=8, train=False)
    _raises("neither a prepared root", load_real_split, "mars", tmp_path, "train", num_frames=2, image_size=8,
            train=False)
    _raises("python -m data.prepare mars", load_real_split, "mars", mars.raw, "train", num_frames=2, image_size=8,
            train=False)


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    assert prepare_main(["mars", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "mars_attributes.csv" in err and "\n" not in err


def test_write_frame_helper_encodes_position(tmp_path):
    write_frame(tmp_path / "f.jpg", 3)
    assert abs(np.asarray(Image.open(tmp_path / "f.jpg"))[..., 0].mean() - 3 * RED_STEP) < 4
