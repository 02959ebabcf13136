"""Tests of the synthetic video PAR dataset: API shapes, determinism, visibility of every class, motion only across
frames, skewed priors and ordered frame sampling."""
from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from data.schema import MARS, SYNTHETIC
from data.synthetic import (
    _POLE_PERIOD,
    PRIORS,
    SyntheticConfig,
    SyntheticDataError,
    SyntheticVideoPAR,
    labels_of,
    render_frames,
    sample_person,
)
from data.transforms import clip_normalize

SMALL = SyntheticConfig(num_train=6, num_val=3, num_test=3, image_size=32, tracklet_length=16, seed=3)
MULTI = [(g, s) for g, s in zip(MARS.groups, MARS.group_slices(), strict=True) if not g.binary]


def _person(seed: int, **attrs) -> object:
    """A person from a fixed latent draw with chosen attributes (class names or 0/1)."""
    person = sample_person(np.random.default_rng([seed, 99]))
    for group, value in attrs.items():
        person = person.with_attribute(group.replace("_", " "), value)
    return person


BASELINE = dict(top_short=0, bottom_short=0, shoulder_bag=0, backpack=0, hat=0, hand_bag=0, long_hair=0, female=0,
                bottom_skirt=0, motion="walking", top_colour="black", bottom_colour="blue", age="adult")


def test_config_is_validated_with_one_line_messages():
    with pytest.raises(SyntheticDataError, match="num_train"):
        SyntheticConfig(num_train=0)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=8)
    with pytest.raises(SyntheticDataError, match="split"):
        SyntheticVideoPAR(SMALL, "dev", num_frames=4, train=False)


def test_item_shapes_dtypes_and_clip_normalisation():
    ds = SyntheticVideoPAR(SMALL, "train", num_frames=4, train=False)
    video, labels = ds[1]
    assert len(ds) == 6 and ds.schema is SYNTHETIC and SYNTHETIC.column_names() == MARS.column_names()
    assert video.shape == (4, 3, 32, 32) and video.dtype == torch.float32
    assert labels.shape == (43,) and labels.dtype == torch.float32
    assert ds.labels.shape == (6, 43) and ds.labels.dtype == np.float32
    frames = ds.render_tracklet(1, [2, 6, 10, 14])
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    torch.testing.assert_close(video, clip_normalize(torch.from_numpy(frames)))
    assert ds.render_tracklet(0).shape == (16, 32, 32, 3)
    bigger = SyntheticVideoPAR(SMALL, "val", num_frames=2, train=True, image_size=48)
    assert bigger[0][0].shape == (2, 3, 48, 48)
    batch_video, batch_labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch_video.shape == (3, 4, 3, 32, 32) and batch_labels.shape == (3, 43)
    with pytest.raises(IndexError):
        ds[6]


def test_labels_are_one_hot_per_multiclass_group():
    labels = SyntheticVideoPAR(replace(SMALL, num_train=300), "train", num_frames=1, train=False).labels
    assert set(np.unique(labels)) <= {0.0, 1.0}
    for _, cols in MULTI:
        np.testing.assert_array_equal(labels[:, cols].sum(axis=1), np.ones(300))
    person = _person(0, **BASELINE, pose="back").with_attribute("hat", 1)
    expected = np.zeros(43, np.float32)
    expected[[4, 9 + 4, 15 + 0, 20 + 0, 29 + 7, 39 + 2]] = 1.0  # hat, back, walking, black top, blue bottom, adult
    np.testing.assert_array_equal(labels_of(person), expected)


def test_same_seed_and_index_give_identical_items_and_splits_differ():
    a = SyntheticVideoPAR(SMALL, "test", num_frames=4, train=False)
    b = SyntheticVideoPAR(SMALL, "test", num_frames=4, train=False)
    np.testing.assert_array_equal(a.labels, b.labels)
    for i in range(3):
        np.testing.assert_array_equal(a.render_tracklet(i), b.render_tracklet(i))
    val = SyntheticVideoPAR(SMALL, "val", num_frames=4, train=False)
    other_seed = SyntheticVideoPAR(replace(SMALL, seed=4), "test", num_frames=4, train=False)
    for other in (val, other_seed):
        assert all(np.any(other.render_tracklet(i) != a.render_tracklet(i)) for i in range(3))


@pytest.mark.parametrize("view", ["frontal", "lateral", "back"])
def test_every_class_of_every_group_renders_differently(view):
    """Only one attribute changes between two renders (same latent, nuisances off): the pixels must differ visibly."""
    base = _person(7, **BASELINE, pose=view)
    for group in MARS.groups:
        values = [0, 1] if group.binary else list(range(group.width))
        clips = [render_frames(base.with_attribute(group.name, k), range(16), image_size=64, nuisance_scale=0.0)
                 for k in values]
        for (i, x), (j, y) in itertools.combinations(enumerate(clips), 2):
            changed = np.any(x != y, axis=-1).sum()  # pixels that differ over the tracklet
            assert changed >= 64, f"{group.name}: classes {i} and {j} differ in only {changed} pixels ({view})"


def test_motion_is_invisible_in_one_frame_but_visible_across_frames():
    clips = [render_frames(_person(5, motion=m), range(16), image_size=64) for m in MARS.group("motion").classes]
    for x, y in itertools.combinations(clips, 2):
        np.testing.assert_array_equal(x[:8], y[:8])  # the first half is the same for every class
        assert np.any(x[8:] != y[8:])
    # The second half of a walker is what a standing person shows whose draw starts at the other stance (phi0 + pi);
    # a runner's also has the scene moved on by half a pole period.
    for motion, scroll_step in (("walking", 0.0), ("running", _POLE_PERIOD / 2)):
        mover = _person(5, motion=motion)
        stander = replace(mover.with_attribute("motion", "staying"), phi0=float((mover.phi0 + np.pi) % (2 * np.pi)),
                          scroll0=float((mover.scroll0 + scroll_step) % 1.0))
        np.testing.assert_array_equal(render_frames(mover, [11], image_size=64),
                                      render_frames(stander, [11], image_size=64))


def test_priors_are_near_flat_and_drawn_as_declared():
    people = [sample_person(np.random.default_rng([11, i])) for i in range(2000)]
    motion = np.bincount([p.attrs["motion"] for p in people], minlength=5) / 2000
    np.testing.assert_allclose(motion, PRIORS["motion"], atol=0.03)
    assert all(abs(sum(row) - 1.0) < 1e-9 for row in PRIORS.values() if len(row) > 1)
    for group, row in PRIORS.items():  # every class common enough to be measured, none dominant
        classes = row if len(row) > 1 else (row[0], 1 - row[0])
        assert min(classes) >= 0.05 and max(classes) <= 0.8, group


def test_eval_frames_are_segment_centres_and_train_frames_are_redrawn():
    evaluation = SyntheticVideoPAR(SMALL, "val", num_frames=4, train=False)
    assert evaluation.frame_indices(0) == evaluation.frame_indices(0) == [2, 6, 10, 14]
    torch.testing.assert_close(evaluation[0][0], evaluation[0][0])
    training = SyntheticVideoPAR(SMALL, "train", num_frames=4, train=True, sample_seed=1)
    first, second = training.frame_indices(2), training.frame_indices(2)
    assert first != second
    for draw in (first, second):
        assert all(4 * k <= f < 4 * k + 4 for k, f in enumerate(draw))
    again = SyntheticVideoPAR(SMALL, "train", num_frames=4, train=True, sample_seed=1)
    assert again.frame_indices(2) == first  # deterministic run to run
    assert not torch.equal(training[3][0], training[3][0])  # two epochs' draws of one item differ


def test_render_frames_rejects_bad_requests():
    person = _person(0)
    with pytest.raises(SyntheticDataError, match="frame_indices"):
        render_frames(person, [16], image_size=32)
    with pytest.raises(SyntheticDataError, match="image_size"):
        render_frames(person, [0], image_size=8)
    with pytest.raises(SyntheticDataError, match="hat"):
        person.with_attribute("hat", 2)


def test_cached_tracklets_give_the_frames_a_direct_render_gives(monkeypatch):
    cached = SyntheticVideoPAR(SMALL, "train", num_frames=3, train=True)
    assert cached._cache is not None
    for i, indices in ((0, [1, 7, 12]), (3, [0, 5, 15]), (0, [2, 3, 4])):
        np.testing.assert_array_equal(cached.render_tracklet(i, indices),
                                      render_frames(cached.people[i], indices, image_size=SMALL.image_size))
    assert np.flatnonzero(cached._cache.ready).tolist() == [0, 3]  # whole tracklets, rendered once per item
    monkeypatch.setattr("data.synthetic.CACHE_LIMIT_BYTES", 0)
    uncached = SyntheticVideoPAR(SMALL, "train", num_frames=3, train=True)
    assert uncached._cache is None
    np.testing.assert_array_equal(uncached.render_tracklet(3, [0, 5, 15]), cached.render_tracklet(3, [0, 5, 15]))


def test_a_completely_rendered_split_is_reused_from_disk_by_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PAR_BENCH_CACHE_DIR", str(tmp_path))
    first = SyntheticVideoPAR(SMALL, "val", num_frames=2, train=False)
    expected = [first.render_tracklet(i) for i in range(len(first))]  # the last item completes and saves the split
    assert len(list(tmp_path.glob("tracklets-*.npy"))) == 1

    def no_rendering(*args, **kwargs):
        raise AssertionError("a cached split must not be rendered again")

    monkeypatch.setattr("data.synthetic.render_frames", no_rendering)
    second = SyntheticVideoPAR(SMALL, "val", num_frames=2, train=False)
    for i, frames in enumerate(expected):
        np.testing.assert_array_equal(second.render_tracklet(i), frames)
    other_split = SyntheticVideoPAR(SMALL, "test", num_frames=2, train=False)
    with pytest.raises(AssertionError, match="must not be rendered"):
        other_split.render_tracklet(0)  # a different key: not served from the val file


def test_cache_files_that_do_not_fit_are_ignored_and_off_disables_the_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("PAR_BENCH_CACHE_DIR", str(tmp_path))
    ds = SyntheticVideoPAR(SMALL, "val", num_frames=2, train=False)
    ds._cache.path.write_bytes(b"not an npy file")
    again = SyntheticVideoPAR(SMALL, "val", num_frames=2, train=False)
    assert not again._cache.ready.any()
    monkeypatch.setenv("PAR_BENCH_CACHE_DIR", "off")
    assert SyntheticVideoPAR(SMALL, "val", num_frames=2, train=False)._cache.path is None
