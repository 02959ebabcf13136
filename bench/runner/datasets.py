"""Datasets of a run: the synthetic default or a real MARS / Duke root, as train / val / test splits."""
from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

from bench.config import DataConfig

SPLITS = ("train", "val", "test")


def build_split(cfg: DataConfig, split: str, *, image_size: int, sample_seed: int) -> Dataset:
    """One split, with the config's frame ablation (data/ablation.py) applied when one is set."""
    dataset = _load_split(cfg, split, image_size=image_size, sample_seed=sample_seed)
    if cfg.frame_ablation == "none":
        return dataset
    from data.ablation import FrameAblation

    return FrameAblation(dataset, cfg.frame_ablation, seed=sample_seed)


def _load_split(cfg: DataConfig, split: str, *, image_size: int, sample_seed: int) -> Dataset:
    """One split; frames are sampled with a random offset only for the training split."""
    train = split == "train"
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
    for key, what in (("track_ids", "clips"), ("pids", "person identities")):
        for i, first in enumerate(SPLITS):
            for second in SPLITS[i + 1:]:
                shared = set(_ids(datasets[first], key)) & set(_ids(datasets[second], key))
                if shared:
                    raise SplitOverlapError(f"the {first} and {second} splits share {len(shared)} {what} (e.g. "
                                            f"{sorted(map(str, shared))[0]}); the splits must be disjoint")


def _ids(dataset: Dataset, key: str) -> list:
    values = getattr(dataset, key, None)
    return [] if values is None else [str(v) for v in values]


def build_loaders(cfg: DataConfig, *, image_size: int, batch_size: int, seed: int, pin_memory: bool = False
                  ) -> dict[str, DataLoader]:
    """DataLoaders for the three splits; training batches are shuffled deterministically from ``seed``."""
    import torch

    loaders, datasets = {}, {split: build_split(cfg, split, image_size=image_size, sample_seed=seed)
                             for split in SPLITS}
    check_disjoint(datasets)
    for split, dataset in datasets.items():
        generator = torch.Generator().manual_seed(seed)
        loaders[split] = DataLoader(dataset, batch_size=batch_size, shuffle=split == "train",
                                    drop_last=split == "train" and len(dataset) > batch_size,
                                    num_workers=cfg.num_workers, generator=generator, pin_memory=pin_memory,
                                    persistent_workers=cfg.num_workers > 0)
    return loaders
