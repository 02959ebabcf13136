"""Frames as VTF feeds them: aspect kept and zero-padded to the square input; the released augmentation in training
only, deterministic for a seed."""
import numpy as np
import pytest
import torch
from PIL import Image

from bench.config import DataConfig, RunConfig
from data.prepare import prepare
from data.transforms import AUGMENTS, fit_frame, pad_crop_flip
from data.video_dataset import ManifestVideoDataset, read_frame
from tests.real_fixtures import make_mars_fixture


def person_frame(tmp_path) -> tuple[Image.Image, str]:
    """A 256 x 128 (H x W) frame, every pixel bright: padding is the only source of zeros."""
    path = tmp_path / "0001C1T0001F001.png"
    Image.new("RGB", (128, 256), (200, 150, 100)).save(path)
    return Image.open(path), str(path)


def test_slim_frame_becomes_square_with_aspect_kept_and_zeros_at_the_sides(tmp_path):
    _, path = person_frame(tmp_path)
    frame = read_frame(path, 224)  # default fit: pad
    assert frame.shape == (224, 224, 3) and frame.dtype == np.uint8
    filled_cols = np.where(frame.any(axis=(0, 2)))[0]
    assert (filled_cols.min(), filled_cols.max() + 1) == (56, 168)  # 224 x 112 person, centred
    assert frame[:, :56].max() == 0 and frame[:, 168:].max() == 0  # zero pixels either side
    assert frame[:, 56:168].min() > 0 and frame.any(axis=(1, 2)).all()  # full height used


def test_stretch_fills_the_square(tmp_path):
    image, _ = person_frame(tmp_path)
    assert fit_frame(image, 224, "stretch").min() > 0


def test_wide_frame_is_padded_top_and_bottom():
    frame = fit_frame(Image.new("RGB", (200, 100), (255, 255, 255)), 100)
    filled_rows = np.where(frame.any(axis=(1, 2)))[0]
    assert (filled_rows.min(), filled_rows.max() + 1) == (25, 75)


def clip_of_gradients(frames: int = 3, size: int = 16) -> np.ndarray:
    ramp = np.arange(size * size, dtype=np.uint8).reshape(size, size)
    return np.repeat(np.stack([ramp, ramp, ramp], -1)[None], frames, axis=0)  # (T, S, S, 3), identical frames


def test_pad_crop_flip_keeps_the_size_and_is_a_shifted_or_mirrored_view():
    clip = clip_of_gradients()
    out = pad_crop_flip(clip, np.random.default_rng(0), pad=2, per_frame=True)
    assert out.shape == clip.shape and out.dtype == np.uint8
    padded = np.pad(clip[0], ((2, 2), (2, 2), (0, 0)))
    views = [padded[t:t + 16, s:s + 16] for t in range(5) for s in range(5)]
    views += [v[:, ::-1] for v in views]
    assert all(any(np.array_equal(frame, v) for v in views) for frame in out)


def test_per_clip_draw_keeps_frames_aligned_and_per_frame_does_not():
    clip = clip_of_gradients(frames=6)
    aligned = pad_crop_flip(clip, np.random.default_rng(3), pad=4, per_frame=False)
    assert all(np.array_equal(aligned[0], frame) for frame in aligned)
    differs = [pad_crop_flip(clip, np.random.default_rng(s), pad=4, per_frame=True) for s in range(5)]
    assert any(not np.array_equal(d[0], frame) for d in differs for frame in d[1:])


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    prepare("mars", make_mars_fixture(root), root / "prepared", val_fraction=0.25, seed=0)
    return root / "prepared"


def dataset(root, *, train: bool, augment: str, seed: int = 0) -> ManifestVideoDataset:
    return ManifestVideoDataset(root, "train" if train else "test", num_frames=2, image_size=16, train=train,
                                sample_seed=seed, augment=augment, augment_pad=3)


def clips(ds, count: int = 4) -> list[torch.Tensor]:
    return [ds[i][0] for i in range(count)]


def test_augmentation_only_when_training(prepared_root):
    plain, augmented = dataset(prepared_root, train=False, augment="none"), dataset(prepared_root, train=False,
                                                                                    augment="frame")
    assert all(torch.equal(a, b) for a, b in zip(clips(plain), clips(augmented), strict=True))
    again = clips(augmented)
    assert all(torch.equal(a, b) for a, b in zip(clips(augmented), again, strict=True))  # evaluation repeats


def test_training_augmentation_is_deterministic_for_a_seed(prepared_root):
    first = clips(dataset(prepared_root, train=True, augment="frame", seed=7))
    second = clips(dataset(prepared_root, train=True, augment="frame", seed=7))
    other = clips(dataset(prepared_root, train=True, augment="frame", seed=8))
    unaugmented = clips(dataset(prepared_root, train=True, augment="none", seed=7))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, unaugmented, strict=True))


def test_frame_options_are_validated_where_the_config_is_built():
    for field, value in (("frame_fit", "squash"), ("augment", "always"), ("augment_pad", -1)):
        with pytest.raises(ValueError, match=f"data.{field}"):
            RunConfig.from_dict({"data": {field: value}})
    assert DataConfig().frame_fit == "pad" and set(AUGMENTS) == {"none", "frame", "clip"}
