"""The weighted sigmoid cross-entropy of VTF / VTFPAR++ (after Li et al.'s DeepMAR weighting).

With r_j the positive rate of column j in the training split, a positive label is weighted exp(1 - r_j) and a
negative one exp(r_j), so rare positives cost more. Summed over attributes, averaged over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightedBCE(nn.Module):
    def __init__(self, positive_rates: torch.Tensor):
        super().__init__()
        self.register_buffer("positive_rates", torch.as_tensor(positive_rates, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        r = self.positive_rates
        weights = torch.where(labels > 0.5, torch.exp(1.0 - r), torch.exp(r))  # (B, A)
        loss = F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="none")
        return loss.sum(dim=1).mean()
