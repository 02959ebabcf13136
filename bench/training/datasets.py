"""Datasets of a run: the synthetic default or a real MARS / Duke root, as train / val / test splits, and the fixed
subset of training clips a run also evaluates as it evaluates the test split (bench/measure/generalisation.py)."""
from __future__ import annotations

import copy

import numpy as np
from torch.utils.data import DataLoader, Dataset

from bench.config import DataConfig
from bench.measure.generalisation import TRAIN_SUBSET, subset_clips

SPLITS = ("train", "val", "test")


def build_split(cfg: DataConfig, split: str, *, image_size: int, sample_seed: int, training: bool | None = None
                ) -> Dataset:
    """One split, with the config's frame ablation (data/ablation.py) applied when one is set. ``training``: sample
    its frames as training does (random offsets, augmentation); default: only the training split."""
    dataset = _load_split(cfg, split, image_size=image_size, sample_seed=sample_seed,
                          training=split == "train" if training is None else training)
    if cfg.frame_ablation == "none":
        return dataset
    from data.ablation import FrameAblation

    return FrameAblation(dataset, cfg.frame_ablation, seed=sample_seed)


def _load_split(cfg: DataConfig, split: str, *, image_size: int, sample_seed: int, training: bool) -> Dataset:
    """One split; frames are sampled with a random offset when it is trained on."""
    train = training
    if cfg.dataset == "synthetic":
        from data.synthetic import SyntheticConfig, SyntheticVideoPAR

        synthetic = SyntheticConfig(num_train=cfg.num_train, num_val=cfg.num_val, num_test=cfg.num_test,
                                    image_size=image_size, tracklet_length=cfg.tracklet_length, seed=cfg.data_seed)
        return SyntheticVideoPAR(synthetic, split, num_frames=cfg.frames, train=train, sample_seed=sample_seed,
                                 augment=cfg.augment, augment_pad=cfg.augment_pad)
    from data.video_dataset import load_real_split

    return load_real_split(cfg.dataset, cfg.data_root, split, num_frames=cfg.frames, image_size=image_size,
                           train=train, sample_seed=sample_seed, frame_fit=cfg.frame_fit, augment=cfg.augment,
                           augment_pad=cfg.augment_pad)


class SplitOverlapError(ValueError):
    """Two splits of a run share clips or person identities: a test score would not measure generalisation."""


def check_disjoint(datasets: dict[str, Dataset]) -> None:
    """Train, val and test share no clip (``track_ids``) and no person (``pids``): cheap, exact, run by every run,
    so a loader wired to the wrong split (the training split as test, say) fails instead of scoring high."""
    present = [split for split in SPLITS if split in datasets]
    for key, what in (("track_ids", "clips"), ("pids", "person identities")):
        for i, first in enumerate(present):
            for second in present[i + 1:]:
                shared = set(_ids(datasets[first], key)) & set(_ids(datasets[second], key))
                if shared:
                    raise SplitOverlapError(f"the {first} and {second} splits share {len(shared)} {what} (e.g. "
                                            f"{sorted(map(str, shared))[0]}); the splits must be disjoint")


def _ids(dataset: Dataset, key: str) -> list:
    values = getattr(dataset, key, None)
    return [] if values is None else [str(v) for v in values]


def evaluation_view(dataset: Dataset) -> Dataset:
    """The same clips sampled as evaluation samples them (``train`` off: segment-centre frames, no augmentation),
    through any wrapper (a frame ablation stays applied). A shallow copy: it shares the rendered frames, so
    evaluating training clips renders nothing again, and the training dataset itself is left as it was."""
    view = copy.copy(dataset)
    inner = getattr(dataset, "dataset", None)  # a wrapper's dataset (a real dataset's ``dataset`` is its name)
    if isinstance(inner, Dataset):
        view.dataset = evaluation_view(inner)
    else:
        view.train = False
    return view


class FirstClips(Dataset):
    """The first ``count`` clips of ``dataset``, with their ``labels`` (count, A) as every split has them."""

    def __init__(self, dataset: Dataset, count: int):
        self.dataset, self.count = dataset, count
        self.labels = dataset.labels[:count]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        if not 0 <= i < self.count:
            raise IndexError(f"index {i} out of range for the first {self.count} training clips")
        return self.dataset[i]


def train_subset(datasets: dict[str, Dataset]) -> Dataset:
    """The first ``subset_clips(len(train), len(test))`` clips of the training split, as evaluation sees them. Taken
    from the split itself, not from what the training loader iterates, so a loader fed other clips is caught."""
    count = subset_clips(len(datasets["train"]), len(datasets.get("test", datasets["val"])))
    return FirstClips(evaluation_view(datasets["train"]), count)


class JoinedSplits(Dataset):
    """Several splits trained on as one (the papers train on the whole training split: train + validation
    identities), with the ``labels``, ``track_ids`` and ``pids`` every split has, in order."""

    def __init__(self, *parts: Dataset):
        self.parts = parts
        self.labels = np.concatenate([part.labels for part in parts])
        self.offsets = np.cumsum([0, *(len(part) for part in parts)])
        for key in ("track_ids", "pids"):
            values = [_ids(part, key) for part in parts]
            setattr(self, key, [v for vs in values for v in vs] if all(values) else None)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} joined clips")
        part = int((self.offsets[1:] <= i).sum())
        return self.parts[part][i - int(self.offsets[part])]

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


def protocol_splits(protocol: str) -> dict[str, bool]:
    """The splits a protocol builds, each with whether it is sampled as training samples it: ``val-only`` never
    builds the test split, ``full-train`` trains on the validation split too."""
    if protocol == "val-only":
        return {"train": True, "val": False}
    return {"train": True, "val": protocol == "full-train", "test": False}


def arrange(datasets: dict[str, Dataset], protocol: str) -> dict[str, Dataset]:
    """The loaders' datasets under the run's protocol (bench/config.py ``TrainConfig.protocol``)."""
    datasets = dict(datasets)
    if protocol == "full-train":  # no validation split: the last epoch is tested
        datasets["train"] = JoinedSplits(datasets["train"], datasets.pop("val"))
    elif protocol == "test-select":  # the released code's practice: the test split chooses the checkpoint
        datasets["val"] = datasets["test"]
    return datasets


def build_loaders(cfg: DataConfig, *, image_size: int, batch_size: int, seed: int, pin_memory: bool = False,
                  protocol: str = "val") -> dict[str, DataLoader]:
    """DataLoaders for the splits of ``protocol`` (``protocol_splits``, ``arrange``) and ``train_subset`` (in order,
    as the test split); training batches are shuffled deterministically from ``seed``."""
    import torch

    loaders = {}
    datasets = {split: build_split(cfg, split, image_size=image_size, sample_seed=seed, training=training)
                for split, training in protocol_splits(protocol).items()}
    check_disjoint(datasets)
    datasets[TRAIN_SUBSET] = train_subset(datasets)
    datasets = arrange(datasets, protocol)
    for split, dataset in datasets.items():
        generator = torch.Generator().manual_seed(seed)
        loaders[split] = DataLoader(dataset, batch_size=batch_size, shuffle=split == "train",
                                    drop_last=split == "train" and len(dataset) > batch_size,
                                    num_workers=cfg.num_workers, generator=generator, pin_memory=pin_memory,
                                    persistent_workers=cfg.num_workers > 0)
    return loaders
