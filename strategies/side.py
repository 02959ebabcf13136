"""VTFPAR++ spatiotemporal side tuning (Wang et al., 2024): a small side network replaces the visual path.

The whole CLIP visual tower is frozen and runs under ``torch.no_grad()``: its own output is not used, only
intermediate token maps ("taps") are read, so no backbone activation is kept for backward and the backward pass
never enters the backbone. Two randomly initialised side networks of width ``width`` (240 in the paper; plain
pre-norm ViT blocks, 6 heads, MLP 4x, qkv bias: open_clip's ``ResidualAttentionBlock``) consume the taps:

* Spatial side network (SSN), per frame: Conv2d(3 -> W, kernel = stride = the backbone's patch size) on the raw
  frame -> P patch tokens + its own class token + positional embedding. Fusing a tap = LayerNorm(D_clip) ->
  Linear(D_clip -> W) (the released code's 1x1 conv) -> added to the P patch tokens, the class token untouched.
  The first tap is fused before side block 1, tap i after side block i (paper: tap 0 before block 1, taps 3, 6,
  9, 11 after blocks 1..4); the positional embedding is re-added after every block but the last; ``ssn_depth``
  (7) blocks run. Per frame (B*T, 1+P, W), then the mean over frames -> (B, 1+P, W).
* Temporal side network (TSN): one stream per tap, all streams sharing the TSN blocks; block t processes frame t
  (one block per frame, at most ``max_frames``: 8 in the paper). Frame 0: Linear(D_clip -> W) of the tap's
  frame-0 patches + class token
  + positional embedding -> block 0. Frame t >= 1: block t, then LayerNorm + Linear(D_clip -> W) of frame t's tap
  added to the patch tokens. The output is the last frame's tokens, averaged over the streams -> (B, 1+P, W).

Visual tokens = SSN + TSN (B, 1+P, W); ``spatial`` / ``temporal`` switch one network off (ablations). They go
straight into the shared fusion block and head of models/par_model.py, as in VTFPAR++'s forward, where the side
width and the fusion width are both 240 (``fusion_projection="auto"``). Only where the widths differ (the small
embedded default: side 48, fusion 128) a Linear(W -> fusion width) is put in between; ``"linear"`` always puts one
there (57,840 parameters at 240, not part of VTFPAR++).

The side network is the whole temporal model: ``model.temporal`` (the aggregator of the plain CLIP path) does not
apply, and a run asking for ``tmd`` under side tuning fails instead of silently running the mean.

Choices where the released code (Event-AHU/OpenPAR, folder VTFPAR++) and the paper differ or are silent:
- TSN order: block-then-add as in the code (the paper's figure draws add-then-block).
- TSN frame-0 input: one Linear shared by all streams, no LayerNorm, as in the code; the frame t >= 1 fusions have
  their own LayerNorm + Linear per stream. One class token and one positional embedding shared by the streams,
  added at frame 0 only (the code never re-adds it in the TSN).
- Only what the forward uses is registered: the code builds an 8-block SSN and runs 7 (694,320 unused params),
  gives the TSN a patch embedding and five 240x240 projections it never calls. Here the SSN has ``ssn_depth``
  blocks and the TSN none of those extras. The TSN has one block per frame index (the method's design, at most
  ``max_frames``, 8 in the paper): the model's clip length (``model.num_frames``, 6 at paper scale) decides how many
  are built, and with one frame the frame t >= 1 fusions are not built either (the released count includes the
  paper's 2 idle blocks at 6 frames).
- No final LayerNorm on either network (the code replaces it with identity); the backbone runs in its own dtype
  (the code casts CLIP to fp16) and the taps are cast to the side network's dtype.
- The backbone runs only up to the deepest tap: with taps (0, 3, 6, 9, 11) CLIP's 12th block and ``ln_post`` are
  skipped, because their output is not used.
- Taps for backbones shallower than ViT-B/16's 12 blocks: ``default_taps(depth)`` scales the paper's indices,
  ``floor(k * depth / 12 + 0.5)`` for k in (0, 3, 6, 9, 11), duplicates dropped (depth 4 -> (0, 1, 2, 3, 4),
  depth 2 -> (0, 1, 2)). Tap index 0 = after ``ln_pre``, tap k = output of block k (1-based), class token dropped.
- Initialisation as timm's ViT (the code builds its side blocks with timm): truncated normal std 0.02 for block
  weights, zero biases; class token / positions N(0, 0.02); fusion linears kaiming-uniform(a=1) with zero bias
  (the code's ``c2_xavier_fill``).

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns; P patches, S streams (taps),
W side width, B' = B*T frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.vision import ClipFrameEncoder
from strategies.options import option
from strategies.registry import NEW_PARAMETERS, StrategyError, StrategyOptions, register

PAPER_DEPTH = 12
PAPER_WIDTH = 768  # ViT-B/16, the backbone VTFPAR++ sizes its side networks for
PAPER_TAPS = (0, 3, 6, 9, 11)
PAPER_SIDE_WIDTH, PAPER_SIDE_HEAD_WIDTH, PAPER_SSN_DEPTH = 240, 40, 7  # section 3.3: 6 heads of 40
FUSION_PROJECTIONS = ("auto", "linear")


def _taps_problem(taps: tuple[int, ...]) -> str | None:
    if not taps or min(taps) < 0:
        return f"expected a non-empty list of integers >= 0, got {list(taps)}"
    if list(taps) != sorted(set(taps)):
        return f"expected strictly increasing indices, got {list(taps)}"
    return None


@dataclass(frozen=True)
class SideConfig(StrategyOptions):
    width: int = option(240, "width of the side blocks (paper 240)", min=1)
    heads: int = option(6, "attention heads of the side blocks, dividing width (paper 6)", min=1)
    ssn_depth: int = option(7, "blocks of the spatial side network (paper 7)", min=1)
    taps: tuple[int, ...] | None = option(None, "CLIP outputs read, strictly increasing (0 = after ln_pre, k = block "
                                                "k); null = default_taps(depth)", check=_taps_problem)
    spatial: bool = option(True, "run the spatial side network")
    temporal: bool = option(True, "run the temporal side network")
    max_frames: int = option(8, "most temporal blocks, one per frame (paper 8; the clip length decides how many are "
                                "built)", min=1)
    mlp_ratio: float = option(4.0, "MLP width / width of the side blocks (paper 4)", above=0)
    fusion_projection: str = option("auto", "auto: side tokens straight into the fusion block when the widths match "
                                            "(VTFPAR++), a Linear otherwise; linear: always a Linear",
                                    choices=FUSION_PROJECTIONS)
    checkpoint: bool = option(False, "recompute the side networks' blocks and tap fusions during backward "
                                     "(torch.utils.checkpoint) instead of keeping their activations: less memory for "
                                     "one more side forward; not part of VTFPAR++, values unchanged")

    def check_fields(self) -> None:
        self.require(self.width % self.heads == 0, f"heads: must divide width {self.width}, got {self.heads}")
        self.require(self.spatial or self.temporal, "spatial/temporal: at least one side network must be on")
        self.require(self.taps is None or len(self.taps) - 1 <= self.ssn_depth,
                     f"taps: {len(self.taps or ())} taps need ssn_depth >= {len(self.taps or ()) - 1} (one fused "
                     f"before block 1, one after each block), got {self.ssn_depth}")


def default_taps(depth: int) -> tuple[int, ...]:
    """The paper's taps (0, 3, 6, 9, 11 of 12 blocks) scaled to a backbone of ``depth`` blocks (module docstring)."""
    return tuple(sorted({int(k * depth / PAPER_DEPTH + 0.5) for k in PAPER_TAPS}))


def proportional_side(*, depth: int, width: int) -> dict:
    """Side-network parameters for a backbone of ``depth`` blocks and ``width`` channels, scaled as VTFPAR++ sizes
    them beside ViT-B/16 (section 3.3: 7 blocks of width 240, 6 heads of 40, beside 12 blocks of width 768, taps at
    0, 3, 6, 9, 11): width 240/768 of the backbone's, depth 7/12 of its blocks, the paper's 6 heads (or the most
    below that divide the width), and as many taps as the side blocks can take, spread evenly over the backbone's
    depth (first and last included). Beside par-vit-tiny (4 x 128) this gives width 40, 2 blocks, 5 heads and taps
    (0, 2, 4), so the side networks stay as small beside the backbone as the paper's are: the cost comparison keeps
    its shape. Beside ViT-B/16 it gives the paper's sizes back, with taps (0, 3, 6, 9, 12) for its (0, 3, 6, 9, 11).
    """
    side_width = max(1, round(width * PAPER_SIDE_WIDTH / PAPER_WIDTH))
    heads = next(h for h in range(PAPER_SIDE_WIDTH // PAPER_SIDE_HEAD_WIDTH, 0, -1) if side_width % h == 0)
    ssn_depth = max(1, round(depth * PAPER_SSN_DEPTH / PAPER_DEPTH))
    count = min(ssn_depth + 1, len(PAPER_TAPS), depth + 1)
    taps = sorted({round(i * depth / (count - 1)) for i in range(count)}) if count > 1 else [depth]
    return {"width": side_width, "heads": heads, "ssn_depth": ssn_depth, "taps": taps}


def _init_like_timm(module: nn.Module) -> nn.Module:
    """timm ViT init for a side block: truncated normal (std 0.02) weights, zero biases, LayerNorm (1, 0)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.trunc_normal_(sub.weight, std=0.02)
            nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.MultiheadAttention):
            nn.init.trunc_normal_(sub.in_proj_weight, std=0.02)
            nn.init.zeros_(sub.in_proj_bias)
    return module


def side_block(width: int, heads: int, mlp_ratio: float = 4.0) -> nn.Module:
    """One plain pre-norm ViT block (qkv bias); width 240, 6 heads, MLP 960 -> 694,320 parameters."""
    return _init_like_timm(ResidualAttentionBlock(width, heads, mlp_ratio=mlp_ratio))


def _fusion_linear(d_in: int, d_out: int) -> nn.Linear:
    """The released code's 1x1 conv (kaiming-uniform a=1, zero bias), as a Linear over the token axis."""
    linear = nn.Linear(d_in, d_out)
    nn.init.kaiming_uniform_(linear.weight, a=1)
    nn.init.zeros_(linear.bias)
    return linear


class TapFusion(nn.Module):
    """LayerNorm(D_clip) -> Linear(D_clip -> W): a CLIP tap mapped to side tokens, to be added to the patches."""

    def __init__(self, clip_width: int, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(clip_width)
        self.proj = _fusion_linear(clip_width, width)

    def forward(self, tap: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(tap))  # (..., P, D_clip) -> (..., P, W)


def _add_to_patches(x: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Add (.., P, W) to the patch tokens of x (.., 1+P, W); the class token stays as it is."""
    return torch.cat([x[..., :1, :], x[..., 1:, :] + patches], dim=-2)


def _run(module: nn.Module, *inputs: torch.Tensor, recompute: bool) -> torch.Tensor:
    """``module(*inputs)``; with ``recompute`` and autograd on, through ``torch.utils.checkpoint`` (non-reentrant):
    only the inputs are kept for backward and the module's forward runs again there, under the autocast state of
    the first run. Without autograd (evaluation, the frozen backbone) it is the plain call."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(module, *inputs, use_reentrant=False)
    return module(*inputs)


def _tokens_param(count: int, width: int) -> nn.Parameter:
    return nn.Parameter(nn.init.normal_(torch.empty(count, width), std=0.02))


class SpatialSideNet(nn.Module):
    """SSN: per frame, own patch embedding + taps fused into the first blocks -> (B', 1+P, W)."""

    def __init__(self, cfg: SideConfig, *, clip_width: int, patch_size: int, num_patches: int, num_taps: int):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, cfg.width, kernel_size=patch_size, stride=patch_size)
        self.class_token = _tokens_param(1, cfg.width)  # (1, W)
        self.positions = _tokens_param(1 + num_patches, cfg.width)  # (1+P, W)
        self.fusions = nn.ModuleList(TapFusion(clip_width, cfg.width) for _ in range(num_taps))
        self.blocks = nn.ModuleList(side_block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.ssn_depth))
        self.recompute = cfg.checkpoint

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B', W, h, w) -> (B', P, W)
        if x.shape[1] + 1 != self.positions.shape[0]:
            raise StrategyError(f"side: frames give {x.shape[1]} patches, the backbone's grid has "
                                f"{self.positions.shape[0] - 1}: feed frames at the backbone's input size")
        cls = self.class_token.expand(x.shape[0], 1, -1)  # (B', 1, W)
        return torch.cat([cls, x], dim=1) + self.positions  # (B', 1+P, W)

    def forward(self, images: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        """images (B', 3, H, W), taps [(B', P, D_clip)] -> (B', 1+P, W)."""
        x = _add_to_patches(self.embed(images), _run(self.fusions[0], taps[0], recompute=self.recompute))
        for index, block in enumerate(self.blocks, start=1):
            if index > 1:
                x = x + self.positions  # re-added after every block but the last
            x = _run(block, x, recompute=self.recompute)
            if index < len(taps):
                x = _add_to_patches(x, _run(self.fusions[index], taps[index], recompute=self.recompute))
        return x


class TemporalSideNet(nn.Module):
    """TSN: one stream per tap, block t reads frame t; streams share the blocks -> (B, 1+P, W) (stream mean)."""

    def __init__(self, cfg: SideConfig, *, clip_width: int, num_patches: int, num_taps: int, num_frames: int):
        super().__init__()
        self.first_proj = nn.Linear(clip_width, cfg.width)  # frame 0, shared by the streams (released code)
        self.class_token = _tokens_param(1, cfg.width)  # (1, W)
        self.positions = _tokens_param(1 + num_patches, cfg.width)  # (1+P, W)
        fusions = num_taps if num_frames > 1 else 0  # frame t >= 1 fusions, one per stream
        self.fusions = nn.ModuleList(TapFusion(clip_width, cfg.width) for _ in range(fusions))
        self.blocks = nn.ModuleList(side_block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(num_frames))
        self.recompute = cfg.checkpoint

    def check_frames(self, frames: int) -> None:
        if frames > len(self.blocks):
            raise StrategyError(f"side: the clip has {frames} frames but the temporal side network was built with one "
                                f"block per frame for {len(self.blocks)}-frame clips")

    def first_frame(self, taps: list[torch.Tensor]) -> torch.Tensor:
        """Frame 0 of every stream: [(B, T, P, D_clip)] -> (S*B, 1+P, W) after block 0."""
        x = torch.stack([_run(self.first_proj, tap[:, 0], recompute=self.recompute)
                         for tap in taps]).flatten(0, 1)  # (S, B, P, W) -> (S*B, P, W)
        cls = self.class_token.expand(x.shape[0], 1, -1)  # (S*B, 1, W)
        tokens = torch.cat([cls, x], dim=1) + self.positions  # (S*B, 1+P, W)
        return _run(self.blocks[0], tokens, recompute=self.recompute)

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        """taps [(B, T, P, D_clip)], one per stream -> (B, 1+P, W)."""
        frames = taps[0].shape[1]
        x = self.first_frame(taps)
        if frames > 1:
            fused = [_run(fusion, tap[:, 1:], recompute=self.recompute)
                     for fusion, tap in zip(self.fusions, taps, strict=True)]  # [(B, T-1, P, W)]
            fused = torch.stack(fused).flatten(0, 1)  # (S, B, T-1, P, W) -> (S*B, T-1, P, W)
            for t in range(1, frames):
                x = _add_to_patches(_run(self.blocks[t], x, recompute=self.recompute),
                                    fused[:, t - 1])  # block-then-add (released code)
        return x.unflatten(0, (len(taps), -1)).mean(dim=0)  # (S*B, 1+P, W) -> (S, B, 1+P, W) -> (B, 1+P, W)


class SideVision(nn.Module):
    """video (B, T, 3, H, W) -> (B, 1+P, W) visual tokens from the frozen CLIP taps and the side networks.

    ``frames`` wraps the frozen CLIP visual tower (its parameters keep the base model's names ``vision.frames.
    visual.*``); the added networks are ``side_ssn`` and ``side_tsn`` (None when switched off).
    """

    def __init__(self, backbone: nn.Module, cfg: SideConfig, *, num_frames: int):
        super().__init__()
        if cfg.temporal and num_frames > cfg.max_frames:
            raise StrategyError(f"side: clips of {num_frames} frames, but the temporal side network has at most "
                                f"max_frames={cfg.max_frames} blocks (one per frame); raise max_frames")
        self.frames = ClipFrameEncoder(backbone)
        depth, clip_width = len(self.frames.blocks), self.frames.width
        self.taps = cfg.taps if cfg.taps is not None else default_taps(depth)
        if self.taps[-1] > depth:
            raise StrategyError(f"taps: the backbone has outputs 0..{depth}, got {list(self.taps)}")
        if len(self.taps) - 1 > cfg.ssn_depth:
            raise StrategyError(f"ssn_depth: {len(self.taps)} taps need at least {len(self.taps) - 1} SSN blocks, "
                                f"got {cfg.ssn_depth}")
        patch_size, num_patches = backbone.conv1.kernel_size[0], backbone.positional_embedding.shape[0] - 1
        self.side_ssn = SpatialSideNet(cfg, clip_width=clip_width, patch_size=patch_size, num_patches=num_patches,
                                       num_taps=len(self.taps)) if cfg.spatial else None
        self.side_tsn = TemporalSideNet(cfg, clip_width=clip_width, num_patches=num_patches,
                                        num_taps=len(self.taps), num_frames=num_frames) if cfg.temporal else None
        self.out_dim = cfg.width

    def side_modules(self) -> list[nn.Module]:
        return [module for module in (self.side_ssn, self.side_tsn) if module is not None]

    @torch.no_grad()
    def clip_taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B', 3, H, W) -> [(B', P, D_clip)] CLIP outputs at ``taps`` (class token dropped), without autograd.

        Block outputs come from open_clip's ``forward_intermediates`` (stopping at the deepest tap: the blocks past
        it are not run) where the installed open_clip has it, else from running the blocks here."""
        x = self.frames.embed(images)  # output 0: after ln_pre, (B', 1+P, D_clip)
        wanted = [k - 1 for k in self.taps if k > 0]  # block k's output is intermediate k - 1
        transformer = self.frames.visual.transformer
        if not wanted:
            outputs = []
        elif hasattr(transformer, "forward_intermediates"):
            _, outputs = transformer.forward_intermediates(x, indices=wanted, stop_early=True)
        else:
            outputs, h = [], x
            for index, block in enumerate(self.frames.blocks[: self.taps[-1]]):
                h = block(h)
                if index in wanted:
                    outputs.append(h)
        taps = ([x] if self.taps[0] == 0 else []) + list(outputs)
        return [tap[:, 1:] for tap in taps]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() != 5:
            raise StrategyError(f"side: expected a video (B, T, 3, H, W), got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        if self.side_tsn is not None:
            self.side_tsn.check_frames(t)  # before the backbone runs
        dtype = self.side_modules()[0].class_token.dtype
        images = video.flatten(0, 1)  # (B*T, 3, H, W)
        taps = [tap.to(dtype) for tap in self.clip_taps(images.to(self.frames.visual.conv1.weight.dtype))]
        out = 0
        if self.side_ssn is not None:
            per_frame = self.side_ssn(images.to(dtype), taps)  # (B*T, 1+P, W)
            out = out + per_frame.unflatten(0, (b, t)).mean(dim=1)  # (B, T, 1+P, W) -> (B, 1+P, W)
        if self.side_tsn is not None:
            out = out + self.side_tsn([tap.unflatten(0, (b, t)) for tap in taps])  # [(B, T, P, D_clip)] -> (B, 1+P, W)
        return out


def _check_plain_temporal(model) -> None:
    temporal = getattr(model.vision, "temporal", None)
    if temporal is not None and list(temporal.parameters()):
        raise StrategyError(f"side: model.temporal {type(temporal).__name__} does not apply under side tuning (the "
                            "temporal side network is the temporal model); use model.temporal 'mean'")


def apply(model, cfg: SideConfig):
    """Replace the visual path by the side network; the backbone stays frozen, the side networks train."""
    _check_plain_temporal(model)
    side = SideVision(model.backbone, cfg, num_frames=model.num_frames)
    side.frames.requires_grad_(False)
    for module in side.side_modules():
        module.requires_grad_(True)
    model.replace_vision(side, project=cfg.fusion_projection == "linear" or cfg.width != model.fusion_width)
    return model


register("side", config=SideConfig, apply=apply, hyper=NEW_PARAMETERS, prefixes=("side_",), zero_init=False,
         description="VTFPAR++ spatiotemporal side tuning: frozen CLIP taps feed spatial + temporal side networks")
