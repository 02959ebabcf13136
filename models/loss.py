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

    def constant_optimum_logits(self) -> torch.Tensor:
        """(A,) the logits of the best input-blind predictor under this loss: the head's natural starting point.

        Minimising r e^(1-r) log(1 + e^-z) + (1-r) e^r log(1 + e^z) over z gives
        z* = log(r / (1 - r)) + 1 - 2r (the prior log-odds, shifted by the weighting). Rates are clamped away from
        0 and 1 so an attribute absent from the training split gets a finite logit.
        """
        r = self.positive_rates.clamp(1e-3, 1 - 1e-3)
        return torch.log(r / (1 - r)) + 1.0 - 2.0 * r
