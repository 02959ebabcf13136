"""Deep visual prompt tuning (VPT-deep) and PromptPAR's region-aware prompts on the frozen CLIP visual tower.

VPT-deep (Jia et al., "Visual Prompt Tuning", ECCV 2022): before each of the first ``depth`` blocks, ``num_prompts``
learnable tokens are placed after the class token, [cls, prompts_i, patches]; before block i the outputs of the
previous block's prompts are *replaced* by block i's own prompts. Blocks after ``depth`` carry the last prompts'
outputs on, as VPT does. The prompts are initialised uniformly in +-sqrt(6 / (3 * patch^2 + D)), VPT's xavier-uniform
bound for a token that stands in for a patch embedding (``init="normal"``: N(0, 0.02)). A prompt is a token, so
there is no zero initialisation that leaves the output unchanged: the strategy is not zero-init. The CLIP tower stays
frozen, but the gradient flows through all of it to the prompts: that full backward is VPT's training cost.

PromptPAR (Wang et al., "Pedestrian Attribute Recognition via CLIP based Prompt Vision-Language Fusion", 2023), with
``regions = R > 0``: the patch rows are divided into R overlapping horizontal stripes (``stripe_rows``); stripe r has
its own class token, initialised to CLIP's embedded class token (class embedding + class-slot position, after
ln_pre) and learnable, and its own ``num_prompts`` deep prompts per block; ``global_prompts`` deep prompts see the
whole image. Sequence inside the tower and the additive attention mask (rows = queries, columns = keys)::

    [cls, global prompts (G), patches (P), region cls (R), region prompts (R x num_prompts)]
    stripe r's cls and prompts    -> attend to stripe r's cls, stripe r's prompts, stripe r's patches only
    cls, global prompts, patches  -> attend to every token (``stripe_mask="rows"``, PromptPAR's released mask,
                                     which restricts only the stripe tokens' rows), or to cls, global prompts and
                                     patches only (``"isolated"``: then the base path [cls, patches] is exactly VPT
                                     with G global prompts, whatever the stripe tokens hold)

The mask holds in every block but confines a stripe only per block: from block 1 on, stripe r's patches carry
information from the whole image (patches attend to all patches), so only the first block's stripe outputs are
strictly local. ``strip`` returns [cls, patches, region cls], (B', 1+P+R, D): the region class tokens go through
ln_post and the projection like every token and carry the stripe features into the VTF fusion.

Faithful to PromptPAR: deep visual prompts, overlapping horizontal stripes each with its own class token and prompts,
a mask that confines each stripe to its patches, global prompts, the frozen CLIP tower. Different here: PromptPAR is
image PAR whose fusion transformer stays frozen; here the prompts sit in the VTF video pipeline (per frame, then the
temporal aggregator) and the shared fusion/head train according to the bench's shared ``train_head`` flag. Deep text
prompts are not used: the text tower is run once and its attribute features are cached, so nothing of it is tuned.
PromptPAR's stripe tokens do not see the global class token or global prompts; we keep that. The ``promptpar``
variant uses PromptPAR's 50 deep visual prompts per block (released code), split here as 10 global prompts and
10 per stripe. VPT's prompt dropout is not used.

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from strategies.options import option
from strategies.registry import NEW_PARAMETERS, StrategyError, StrategyOptions, register

INITS = ("uniform", "normal")
STRIPE_MASKS = ("rows", "isolated")


@dataclass(frozen=True)
class PromptConfig(StrategyOptions):
    num_prompts: int = option(8, "deep prompts per block (VPT), or per stripe and block with regions; >= 1 without "
                                 "regions", min=0)
    depth: int | None = option(None, "prompted blocks from the first; null = all", min=1)
    regions: int = option(0, "PromptPAR stripes; 0 = plain VPT", min=0)
    global_prompts: int = option(0, "whole-image prompts per block next to the stripes (regions > 0 only)", min=0)
    overlap_rows: int = option(1, "extra patch rows per stripe", min=0)
    init: str = option("uniform", "prompt initialisation", choices=INITS)
    stripe_mask: str = option("rows", "rows: PromptPAR's released mask (only the stripe tokens' rows are restricted); "
                                      "isolated: the global tokens may not attend to stripe tokens either",
                              choices=STRIPE_MASKS)

    def check_fields(self) -> None:
        self.require(self.regions or self.num_prompts >= 1,
                     f"num_prompts: expected >= 1 without regions, got {self.num_prompts}")
        self.require(not self.global_prompts or self.regions,
                     "global_prompts: needs regions > 0 (without regions, num_prompts are the global prompts)")


def stripe_rows(rows: int, *, regions: int, overlap_rows: int) -> list[tuple[int, int]]:
    """Patch-row ranges [start, stop) of ``regions`` overlapping horizontal stripes covering ``rows`` rows.

    Every stripe is ``height = min(rows, ceil(rows / regions) + overlap_rows)`` rows high; the starts are spread
    evenly from row 0 to ``rows - height`` (rounded half up), so the stripes cover the image from head to feet with
    even overlaps. ViT-B/16 at 224 px (14 rows), 4 stripes, overlap 1: (0, 5), (3, 8), (6, 11), (9, 14).
    """
    if not 1 <= regions <= rows:
        raise StrategyError(f"regions: expected 1..{rows} (the patch rows of this backbone), got {regions}")
    height = min(rows, math.ceil(rows / regions) + overlap_rows)
    spacing = (rows - height) / max(1, regions - 1)
    starts = [math.floor(r * spacing + 0.5) for r in range(regions)]
    return [(start, start + height) for start in starts]


class DeepPrompts(nn.Module):
    """The prompt hook of ``ClipFrameEncoder`` (see models/vision.py): inserts, replaces and strips prompt tokens."""

    def __init__(self, cfg: PromptConfig, *, width: int, grid: tuple[int, int], num_blocks: int, patch_size: int,
                 class_token: torch.Tensor):
        super().__init__()
        depth = num_blocks if cfg.depth is None else cfg.depth
        if depth > num_blocks:
            raise StrategyError(f"depth: expected at most {num_blocks} (the backbone's blocks), got {depth}")
        self.depth, self.grid, self.regions, self.stripe_mask = depth, tuple(grid), cfg.regions, cfg.stripe_mask
        self.num_global = cfg.global_prompts if cfg.regions else cfg.num_prompts
        self.num_region_prompts = cfg.num_prompts if cfg.regions else 0
        self.stripes = stripe_rows(grid[0], regions=cfg.regions, overlap_rows=cfg.overlap_rows) if cfg.regions else []
        self.prompt_global = self._tokens((depth, self.num_global, width), cfg.init, patch_size)
        self.prompt_region = self._tokens((depth, cfg.regions * self.num_region_prompts, width), cfg.init, patch_size)
        self.prompt_region_cls = (nn.Parameter(class_token.detach().clone().expand(cfg.regions, width).contiguous())
                                  if cfg.regions else None)  # (R, D)
        self.register_buffer("region_mask", self._region_mask() if cfg.regions else None, persistent=False)

    @staticmethod
    def _tokens(shape: tuple[int, int, int], init: str, patch_size: int) -> nn.Parameter | None:
        """VPT's init: uniform in +-sqrt(6 / (3 * patch^2 + D)) (xavier for the patch embedding's fan-in)."""
        if shape[1] == 0:
            return None
        tokens = torch.empty(shape)
        if init == "uniform":
            bound = math.sqrt(6.0 / (3 * patch_size * patch_size + shape[2]))
            return nn.Parameter(nn.init.uniform_(tokens, -bound, bound))
        return nn.Parameter(nn.init.normal_(tokens, std=0.02))

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_extra(self) -> int:
        """Tokens this module adds inside the tower: global prompts, region class tokens, region prompts."""
        return self.num_global + self.regions * (1 + self.num_region_prompts)

    def token_groups(self) -> dict[str, list]:
        """Sequence indices inside the tower: cls, global, patches, region_cls / region_prompts / stripe_patches
        (one list per stripe); the layout in the module docstring."""
        g, p, r, k = self.num_global, self.num_patches, self.regions, self.num_region_prompts
        cols = self.grid[1]
        first_region_prompt = 1 + g + p + r
        return {
            "cls": [0], "global": list(range(1, 1 + g)), "patches": list(range(1 + g, 1 + g + p)),
            "region_cls": [1 + g + p + i for i in range(r)],
            "region_prompts": [list(range(first_region_prompt + i * k, first_region_prompt + (i + 1) * k))
                               for i in range(r)],
            "stripe_patches": [list(range(1 + g + start * cols, 1 + g + stop * cols)) for start, stop in self.stripes],
        }

    def _region_mask(self) -> torch.Tensor:
        """The additive (L, L) mask of the module docstring, L = 1 + P + num_extra: 0 = may attend, -inf = blocked."""
        size, base = 1 + self.num_patches + self.num_extra, 1 + self.num_global + self.num_patches
        allowed = torch.zeros(size, size, dtype=torch.bool)
        allowed[:base, :size if self.stripe_mask == "rows" else base] = True  # cls, global prompts, patches
        groups = self.token_groups()
        for r, patches in enumerate(groups["stripe_patches"]):
            own = torch.tensor([groups["region_cls"][r], *groups["region_prompts"][r]])
            allowed[own.unsqueeze(1), own] = True
            allowed[own.unsqueeze(1), torch.tensor(patches)] = True
        return torch.zeros(size, size).masked_fill(~allowed, float("-inf"))  # (L, L)

    def attn_mask(self, num_tokens: int) -> torch.Tensor | None:
        """The region mask (built once, a non-persistent buffer); None without regions: VPT attends everywhere."""
        if num_tokens != 1 + self.num_patches:
            raise StrategyError(f"prompt hook: expected 1 + {self.num_patches} tokens from the embedding, "
                                f"got {num_tokens}")
        return self.region_mask

    def _expand(self, tokens: torch.Tensor | None, like: torch.Tensor) -> list[torch.Tensor]:
        """(K, D) -> [(B', K, D)] in the dtype of ``like``; [] for an absent group."""
        if tokens is None:
            return []
        return [tokens.to(like.dtype).unsqueeze(0).expand(like.shape[0], -1, -1)]

    def _prompts(self, index: int, like: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        global_ = self.prompt_global[index] if self.prompt_global is not None else None
        region = self.prompt_region[index] if self.prompt_region is not None else None
        return self._expand(global_, like), self._expand(region, like)

    def before_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block 0: insert every extra token; blocks 1..depth-1: replace the prompts (deep VPT); later: unchanged."""
        if index >= self.depth:
            return x
        global_, region = self._prompts(index, x)
        if index == 0:
            region_cls = self._expand(self.prompt_region_cls, x)
            return torch.cat([x[:, :1], *global_, x[:, 1:], *region_cls, *region], dim=1)  # (B', 1+P+extra, D)
        kept = x[:, 1 + self.num_global: 1 + self.num_global + self.num_patches + self.regions]  # patches, region cls
        return torch.cat([x[:, :1], *global_, kept, *region], dim=1)  # (B', 1+P+extra, D)

    def strip(self, x: torch.Tensor) -> torch.Tensor:
        """(B', 1+P+extra, D) -> (B', 1+P+R, D): [cls, patches, region class tokens], the prompts dropped."""
        return torch.cat([x[:, :1], x[:, 1 + self.num_global: 1 + self.num_global + self.num_patches + self.regions]],
                         dim=1)


def _embedded_class_token(visual: nn.Module) -> torch.Tensor:
    """CLIP's class token as the first block sees it: ln_pre(class embedding + class-slot position), (D,)."""
    with torch.no_grad():
        return visual.ln_pre(visual.class_embedding + visual.positional_embedding[0])


def apply(model: nn.Module, cfg: PromptConfig) -> nn.Module:
    """Attach ``DeepPrompts`` as ``model.vision.frames.prompts``; only its ``prompt_*`` parameters learn."""
    frames = getattr(model.vision, "frames", None)
    if frames is None or not hasattr(frames, "prompts"):
        raise StrategyError("prompt: model.vision has no ClipFrameEncoder prompt hook (was the visual path replaced?)")
    if frames.prompts is not None:
        raise StrategyError("prompt: model.vision.frames.prompts is already set; apply one prompt strategy only")
    visual = model.backbone
    prompts = DeepPrompts(cfg, width=frames.width, grid=tuple(visual.grid_size), num_blocks=len(frames.blocks),
                          patch_size=visual.conv1.kernel_size[0], class_token=_embedded_class_token(visual))
    frames.prompts = prompts.to(visual.class_embedding.device)
    prompts.requires_grad_(True)
    return model


register("prompt", config=PromptConfig, apply=apply, hyper=NEW_PARAMETERS, prefixes=("prompt_",), zero_init=False,
         description="deep visual prompt tuning (VPT-deep); regions > 0: PromptPAR region-aware stripe prompts")
