"""Datasets of a run: the synthetic default or a real MARS / Duke root, as train / val / test splits."""
from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

from bench.config import DataConfig

SPLITS = ("train", "val", "test")


def build_split(cfg: DataConfig, split: str, *, image_size: int, sample_seed: int) -> Dataset:
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


def build_loaders(cfg: DataConfig, *, image_size: int, batch_size: int, seed: int, pin_memory: bool = False
                  ) -> dict[str, DataLoader]:
    """DataLoaders for the three splits; training batches are shuffled deterministically from ``seed``."""
    import torch

    loaders = {}
    for split in SPLITS:
        dataset = build_split(cfg, split, image_size=image_size, sample_seed=seed)
        generator = torch.Generator().manual_seed(seed)
        loaders[split] = DataLoader(dataset, batch_size=batch_size, shuffle=split == "train",
                                    drop_last=split == "train" and len(dataset) > batch_size,
                                    num_workers=cfg.num_workers, generator=generator, pin_memory=pin_memory,
                                    persistent_workers=cfg.num_workers > 0)
    return loaders
