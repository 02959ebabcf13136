"""Attribute text features: phrases -> prompt sentences -> frozen CLIP text encoder, computed once.

VTF's "split, expand, prompt" step is the schema's ``sentences()`` (see data/schema.py). The CLIP text encoder is
frozen in VTF and VTFPAR++, so its output for the fixed attribute sentences is a constant: it is computed once here
and cached in the PAR model as a buffer (the released code recomputes it every step, which only costs time). The
text tower is not kept in the PAR model at all.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def encode_sentences(clip_model: torch.nn.Module, tokenizer, sentences: list[str]) -> torch.Tensor:
    """(A,) sentences -> (A, D_text) EOT features of the CLIP text tower (before normalisation)."""
    was_training = clip_model.training
    clip_model.eval()
    tokens = tokenizer(sentences)
    features = clip_model.encode_text(tokens, normalize=False)
    clip_model.train(was_training)
    return features.float()
