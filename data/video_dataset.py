"""Clips and labels of real MARS / Duke tracklets, read lazily from a prepared manifest.

Each item is ``num_frames`` ordered frames of one tracklet (:func:`data.sampling.sample_frame_indices`: segment
centres at evaluation, a random offset per segment when training), each read with PIL, converted to RGB, fitted to
``image_size`` x ``image_size`` (``frame_fit``: aspect kept and zero-padded as VTF does, or stretched; see
:mod:`data.transforms`), when training optionally augmented (``augment``: the released Pad + RandomCrop + flip), and
normalised with CLIP's mean/std. Images are opened in ``__getitem__`` only, so a ``torch.utils.data.DataLoader``
with workers reads them in parallel.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data.manifest import MANIFEST_FILE, REAL_DATASETS, SPLITS, DatasetError, Manifest, finalize, read_manifest
from data.reencoded import LABEL_FILES, build_reencoded_manifest, is_reencoded
from data.sampling import sample_frame_indices
from data.schema import AttributeSchema
from data.transforms import augment_clip, clip_normalize, fit_frame

DEFAULT_VAL_FRACTION, DEFAULT_SPLIT_SEED = 0.1, 0
RAW_MARKERS = {"mars_attributes.csv": "mars", "bbox_train": "mars", "duke_attributes.csv": "duke"}


def read_frame(path: Path, image_size: int, fit: str = "pad") -> np.ndarray:
    """(S, S, 3) uint8 RGB frame fitted to the square input; an unreadable file raises :class:`DatasetError`."""
    try:
        with Image.open(path) as image:
            return fit_frame(image.convert("RGB"), image_size, fit)
    except (OSError, ValueError) as err:  # missing, truncated or not an image (UnidentifiedImageError is an OSError)
        raise DatasetError(f"{path}: cannot read image ({err})") from None


class ManifestVideoDataset(torch.utils.data.Dataset):
    """One split of a prepared dataset root: ``(clip (T, 3, S, S) float32, labels (A,) float32)`` items.

    ``manifest`` may be passed instead of reading ``root`` (the re-encoded route builds it in memory).
    Training draws are seeded by ``sample_seed``, the item index, torch's per-worker seed and a draw counter,
    so they differ between epochs and DataLoader workers yet repeat when the run is repeated.
    """

    def __init__(self, root: str | Path, split: str, *, num_frames: int, image_size: int, train: bool,
                 sample_seed: int = 0, manifest: Manifest | None = None, frame_fit: str = "pad",
                 augment: str = "none", augment_pad: int = 10):
        if split not in SPLITS:
            raise DatasetError(f"{root}: unknown split {split!r}; expected one of {SPLITS}")
        manifest = manifest if manifest is not None else _read_prepared(Path(root))
        rows = manifest.indices(split)
        if len(rows) == 0:
            raise DatasetError(f"{root}: split {split!r} has no tracklets (prepare with --val-fraction > 0 for val)")
        self.root, self.split, self.dataset = Path(root), split, manifest.dataset
        self.num_frames, self.image_size, self.train, self.sample_seed = num_frames, image_size, train, sample_seed
        self.frame_fit, self.augment, self.augment_pad = frame_fit, augment, augment_pad
        self.schema: AttributeSchema = manifest.schema
        self.labels: np.ndarray = manifest.labels[rows].astype(np.float32)  # (N, A)
        tracks = [manifest.tracks[i] for i in rows]
        self.track_ids = [t.track_id for t in tracks]
        self.pids = np.array([t.pid for t in tracks], dtype=np.int64)
        self.frames_root = manifest.frames_root
        # Paths packed in one bytes array + offsets: no per-path Python objects for forked workers to copy-on-touch.
        self._paths = np.array([p.encode() for t in tracks for p in t.frames], dtype=np.bytes_)
        self._offsets = np.cumsum([0] + [len(t.frames) for t in tracks])
        self._draws = 0

    def __len__(self) -> int:
        return len(self.track_ids)

    def frame_paths(self, i: int) -> list[Path]:
        """All frame files of tracklet ``i``, in temporal order."""
        return [self.frames_root / p.decode() for p in self._paths[self._offsets[i]:self._offsets[i + 1]]]

    def _draw(self, i: int) -> np.random.Generator:
        """A fresh generator for one training access of item ``i`` (frame offsets, then augmentation)."""
        self._draws += 1
        return np.random.default_rng([self.sample_seed, i, torch.initial_seed() % 2**32, self._draws])

    def frame_indices(self, i: int, rng: np.random.Generator | None = None) -> list[int]:
        """The ordered frame indices item ``i`` reads (a fresh random draw each call when training)."""
        n = int(self._offsets[i + 1] - self._offsets[i])
        if self.train and rng is None:
            rng = self._draw(i)
        return sample_frame_indices(n, self.num_frames, train=self.train, rng=rng)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        paths, rng = self.frame_paths(i), self._draw(i) if self.train else None
        frames = np.stack([read_frame(paths[j], self.image_size, self.frame_fit)
                           for j in self.frame_indices(i, rng)])  # (T, S, S, 3)
        if self.train:
            frames = augment_clip(frames, rng, mode=self.augment, pad=self.augment_pad)
        clip = clip_normalize(torch.from_numpy(frames), self.image_size)  # (T, S, S, 3) uint8 -> (T, 3, S, S)
        return clip, torch.from_numpy(self.labels[i])


@lru_cache(maxsize=4)
def _read_prepared_cached(root: str, mtime_ns: int) -> Manifest:
    return read_manifest(root)


def _read_prepared(root: Path) -> Manifest:
    """A prepared root's manifest, read once per process (train/val/test share it) until the file changes."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: missing manifest (run python -m data.prepare first)")
    return _read_prepared_cached(str(root.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _reencoded_cached(dataset: str, root: str, mtime_ns: int, allow_unmatched: bool, val_fraction: float,
                      split_seed: int) -> Manifest:
    manifest = build_reencoded_manifest(dataset, root, allow_unmatched=allow_unmatched)
    return finalize(manifest, val_fraction=val_fraction, seed=split_seed)


def _reencoded(dataset: str, root: Path, **kwargs) -> Manifest:
    labels = next(root / n for n in LABEL_FILES if (root / n).is_file())
    return _reencoded_cached(dataset, str(root.resolve()), labels.stat().st_mtime_ns, **kwargs)


def resolve_manifest(dataset: str, data_root: str | Path, *, allow_unmatched: bool = False,
                     val_fraction: float = DEFAULT_VAL_FRACTION, split_seed: int = DEFAULT_SPLIT_SEED) -> Manifest:
    """The manifest of a prepared root, or of a re-encoded layout (built in memory, val carved by identity)."""
    root = Path(data_root)
    if dataset not in REAL_DATASETS:
        raise DatasetError(f"{root}: dataset must be one of {REAL_DATASETS}, got {dataset!r}")
    if (root / MANIFEST_FILE).is_file():
        manifest = _read_prepared(root)
        if manifest.dataset != dataset:
            raise DatasetError(f"{root / MANIFEST_FILE}: prepared for {manifest.dataset!r}, not {dataset!r}")
        return manifest
    if is_reencoded(root):
        return _reencoded(dataset, root, allow_unmatched=allow_unmatched, val_fraction=val_fraction,
                          split_seed=split_seed)
    raw = next((name for name in RAW_MARKERS if (root / name).exists()), None)
    if raw is not None:
        raise DatasetError(f"{root}: looks like a raw {RAW_MARKERS[raw]} download; run "
                           f"python -m data.prepare {RAW_MARKERS[raw]} --raw {root} --out <root> and pass <root>")
    raise DatasetError(f"{root}: neither a prepared root ({MANIFEST_FILE}) nor a re-encoded layout "
                       f"({' / '.join(LABEL_FILES)} + train_name.txt + an image folder)")


def load_real_split(dataset: str, data_root: str | Path, split: str, *, num_frames: int, image_size: int,
                    train: bool, sample_seed: int = 0, allow_unmatched: bool = False, **frame_options
                    ) -> ManifestVideoDataset:
    """One split of MARS / Duke from a prepared root or a re-encoded layout directory; ``frame_options``:
    ``frame_fit``, ``augment``, ``augment_pad`` of :class:`ManifestVideoDataset`."""
    manifest = resolve_manifest(dataset, data_root, allow_unmatched=allow_unmatched)
    return ManifestVideoDataset(data_root, split, num_frames=num_frames, image_size=image_size, train=train,
                                sample_seed=sample_seed, manifest=manifest, **frame_options)
