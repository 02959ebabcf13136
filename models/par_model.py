"""The VTF PAR model: visual tokens + cached attribute-text tokens -> one fusion block -> per-attribute head.

Zhu et al. (VTF, CVPR-W 2023) and Wang et al. (VTFPAR++, 2024): visual and text tokens are projected to the fusion
width, concatenated as [text; visual], passed through one transformer block and a LayerNorm; attribute j is read from
text token j by its own Linear(width -> 1), and a BatchNorm1d over the A logits follows. VTF uses width 768 / 12
heads, VTFPAR++ width 240 / 6 heads / MLP 960 / drop-path 0.1. The fusion block here is open_clip's pre-norm residual
block; ``FusionSpec.drop_path`` (``model.fusion_drop_path``: 0 in the embedded default, VTFPAR++'s 0.1 under the
``paper`` presets) adds stochastic depth (Huang et al., ECCV 2016) to both of its residual branches, in training only.

Attach points for strategies: ``model.vision`` (replaceable, see ``replace_vision``), ``model.backbone`` (the CLIP
visual tower), ``model.backbone_blocks`` and ``model.vision.frames.prompts`` while the plain CLIP path is in use.
``model.num_frames`` is the clip length the model is built for. ``model.step_hooks`` is a list of callables
``hook(step)`` the training loop calls after every optimizer step.

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from open_clip.transformer import ResidualAttentionBlock
from timm.layers import DropPath
from torch import nn

from models.backbone import create_clip, tokenizer_for
from models.text import encode_sentences
from models.vision import ClipFrameEncoder, VideoEncoder


@dataclass(frozen=True)
class FusionSpec:
    width: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    drop_path: float = 0.0  # stochastic depth of both residual branches, training only (VTFPAR++: 0.1)


def fusion_block(spec: FusionSpec) -> ResidualAttentionBlock:
    """open_clip's pre-norm block x + ls_1(attn(ln_1(x))), then + ls_2(mlp(ln_2(x))), with drop-path on both branches.

    open_clip's block has no drop-path; its LayerScale slots ``ls_1`` / ``ls_2`` (identity without layer scale) sit
    exactly on the two residual branches, so timm's ``DropPath`` (as VTFPAR++'s timm blocks use: a whole sample's
    branch dropped with probability p, kept ones scaled by 1 / (1 - p); identity in eval mode) goes there. No
    parameters or buffers: the state dict is the same with and without it."""
    block = ResidualAttentionBlock(spec.width, spec.heads, mlp_ratio=spec.mlp_ratio)
    if spec.drop_path > 0:
        block.ls_1, block.ls_2 = DropPath(spec.drop_path), DropPath(spec.drop_path)
    return block


#: timm ViT block parameter -> open_clip ResidualAttentionBlock parameter (the fusion block's layout). timm's fused
#: ``qkv`` packs q, k, v along its output rows exactly as ``nn.MultiheadAttention.in_proj_weight`` does.
_TIMM_TO_FUSION = {"norm1": "ln_1", "attn.qkv": "attn.in_proj", "attn.proj": "attn.out_proj", "norm2": "ln_2",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
TIMM_LAYER_NORM_EPS = 1e-6  # timm's ViT LayerNorms (open_clip's default is 1e-5)


class FusionInitError(ValueError):
    """A ViT checkpoint that cannot initialise the fusion block (unreadable, not a timm ViT, or of another width)."""

    bad_input = True  # a bench.errors.BenchError: the command line prints the message alone (exit 2)


def read_vit_state(path: str) -> dict[str, torch.Tensor]:
    """A timm ViT state dict from ``path`` (.safetensors, or a torch file holding the dict or {"model": dict} /
    {"state_dict": dict}, as timm's and DeiT's releases do)."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader's failure is the same fact: this file is not readable weights
        raise FusionInitError(f"model.fusion_init: cannot read {path!r} ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:160]})") from None
    for key in ("model", "state_dict"):
        state = state.get(key, state) if isinstance(state, dict) and isinstance(state.get(key), dict) else state
    if not isinstance(state, dict) or not any(k.startswith("blocks.") for k in state):
        raise FusionInitError(f"model.fusion_init: {path!r} holds no timm ViT state dict (expected keys "
                              "'blocks.N.attn.qkv.weight', ...)")
    return state


def _fusion_key(timm_key: str) -> str | None:
    """A timm block parameter's name in the fusion block (``attn.qkv.weight`` -> ``attn.in_proj_weight``), or None
    for what the fusion block has no place for."""
    module, _, leaf = timm_key.rpartition(".")
    target = _TIMM_TO_FUSION.get(module)
    if target is None:
        return None
    return f"{target}_{leaf}" if module == "attn.qkv" else f"{target}.{leaf}"


def init_fusion_from_vit(model: PARModel, path: str) -> int:
    """VTF's fusion start: the last block and the final norm of a pretrained ViT-B (the released VTF code builds its
    fusion from ``vit.blocks[-1:]`` and ``vit.norm`` of timm's ImageNet ViT-B/16, ``jx_vit_base_p16_224``). The
    fusion block must have the checkpoint's width (VTF: 768) and, for the same function, its heads (ViT-B: 12);
    LayerNorm eps becomes timm's 1e-6. Returns the block index used."""
    state = read_vit_state(path)
    last = max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    block = {k[len(f"blocks.{last}."):]: v for k, v in state.items() if k.startswith(f"blocks.{last}.")}
    if any(k.startswith(("ls1", "ls2")) for k in block):
        raise FusionInitError(f"model.fusion_init: {path!r}: block {last} has LayerScale, which the fusion block "
                              "has not; expected a plain ViT (timm vit_base_patch16_224)")
    mapped = {_fusion_key(k): v for k, v in block.items() if _fusion_key(k) is not None}
    norm = {"weight": state.get("norm.weight"), "bias": state.get("norm.bias")}
    width = model.fusion_width
    if mapped.get("ln_1.weight") is None or mapped["ln_1.weight"].shape[0] != width or norm["weight"] is None:
        found = None if mapped.get("ln_1.weight") is None else mapped["ln_1.weight"].shape[0]
        raise FusionInitError(f"model.fusion_init: {path!r}: block {last} of width {found} (and a final 'norm': "
                              f"{norm['weight'] is not None}), expected width model.fusion_width = {width}")
    try:
        model.fusion.load_state_dict(mapped, strict=True)
        model.fusion_norm.load_state_dict(norm, strict=True)
    except RuntimeError as error:
        raise FusionInitError(f"model.fusion_init: {path!r}: {' '.join(str(error).split())[:200]}") from None
    for norm_layer in (model.fusion.ln_1, model.fusion.ln_2, model.fusion_norm):
        norm_layer.eps = TIMM_LAYER_NORM_EPS
    return last


class AttributeHead(nn.Module):
    """Attribute j's logit = w_j . h_j + b_j on its own text token h_j, then BatchNorm1d over the A logits."""

    def __init__(self, num_attributes: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_attributes, width) * width ** -0.5)
        self.bias = nn.Parameter(torch.zeros(num_attributes))
        self.norm = nn.BatchNorm1d(num_attributes)

    def forward(self, text_tokens: torch.Tensor) -> torch.Tensor:
        logits = (text_tokens * self.weight).sum(-1) + self.bias  # (B, A, W) -> (B, A)
        return self.norm(logits)

    @torch.no_grad()
    def init_prior(self, prior_logits: torch.Tensor) -> None:
        """Start every attribute at a prior logit instead of 0 (Lin et al., "Focal loss", ICCV 2017: prior bias).

        The BatchNorm centres the raw logits, so its shift is the output's offset: with it at 0 every attribute
        starts at p = 0.5, and rare attributes (hat: 6 %) need hundreds of Adam steps at lr 1e-3 just to move their
        offset to where a constant predictor belongs. Neither VTF nor VTFPAR++ does this; it changes where training
        starts, not the model.
        """
        self.norm.bias.copy_(prior_logits.to(self.norm.bias))


class PARModel(nn.Module):
    """video (B, T, 3, H, W) -> attribute logits (B, A)."""

    def __init__(self, *, vision: nn.Module, backbone: nn.Module, text_features: torch.Tensor, fusion: FusionSpec,
                 num_frames: int):
        """``backbone``: the CLIP visual tower inside ``vision``, kept as a reference (its parameters are registered
        once, under ``vision``) so strategies can reach it whatever visual path replaces ``vision``."""
        super().__init__()
        self.num_frames = num_frames  # clip length the model is built for (per-frame modules may size by it)
        object.__setattr__(self, "_backbone", backbone)  # a reference, not a second registration of its parameters
        self.vision = vision
        self.register_buffer("text_features", text_features.clone(), persistent=True)  # (A, D_text)
        self.vision_proj = nn.Linear(vision.out_dim, fusion.width)
        self.text_proj = nn.Linear(text_features.shape[1], fusion.width)
        self.fusion = fusion_block(fusion)
        self.fusion_norm = nn.LayerNorm(fusion.width)
        self.head = AttributeHead(text_features.shape[0], fusion.width)
        self.step_hooks: list = []

    @property
    def num_attributes(self) -> int:
        return self.text_features.shape[0]

    @property
    def backbone(self) -> nn.Module:
        """The CLIP visual tower (frozen, trained or adapted depending on the strategy)."""
        return self._backbone

    @property
    def backbone_blocks(self) -> nn.ModuleList:
        return self.backbone.transformer.resblocks

    def head_modules(self) -> list[nn.Module]:
        """The shared, strategy-independent trainable part: temporal aggregator, projections, fusion, head."""
        modules = [self.vision_proj, self.text_proj, self.fusion, self.fusion_norm, self.head]
        temporal = getattr(self.vision, "temporal", None)
        return modules + ([temporal] if temporal is not None else [])

    @property
    def fusion_width(self) -> int:
        return self.fusion_norm.normalized_shape[0]

    def replace_vision(self, vision: nn.Module, *, project: bool = True) -> None:
        """Swap the visual path (side tuning does this). ``project``: a Linear from its output width to the fusion
        width (resized if needed); without, its tokens go straight into the fusion block (widths must match)."""
        self.vision = vision
        if not project:
            if vision.out_dim != self.fusion_width:
                raise ValueError(f"replace_vision: tokens of width {vision.out_dim} cannot enter a fusion block of "
                                 f"width {self.fusion_width} without a projection")
            self.vision_proj = nn.Identity()
        elif vision.out_dim != self.vision_proj.in_features:
            self.vision_proj = nn.Linear(vision.out_dim, self.fusion_width)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        visual = self.vision_proj(self.vision(video))  # (B, N, D_vis) -> (B, N, W)
        text = self.text_proj(self.text_features).expand(video.shape[0], -1, -1)  # (A, D_text) -> (B, A, W)
        tokens = self.fusion(torch.cat([text, visual], dim=1))  # (B, A+N, W)
        tokens = self.fusion_norm(tokens[:, : self.num_attributes])  # text tokens only: (B, A, W)
        return self.head(tokens)  # (B, A)


def build_par_model(*, backbone: str, pretrained: str | None, sentences: list[str], fusion: FusionSpec,
                    num_frames: int, temporal: str = "mean", activation: str = "auto",
                    encode=encode_sentences) -> PARModel:
    """Create CLIP, cache the attribute-text features, keep only the visual tower inside the PAR model.

    ``encode(clip_model, tokenizer, sentences) -> (A, D_text)`` computes the cached text features; a caller that
    needs shapes only (the cost plan) passes one that skips the text tower's compute.
    ``model.weights_info`` says what the backbone was built from (models/backbone.py)."""
    clip_model = create_clip(backbone, pretrained, activation=activation)
    text_features = encode(clip_model, tokenizer_for(backbone), sentences)
    visual = clip_model.visual
    model = PARModel(vision=VideoEncoder(ClipFrameEncoder(visual), temporal=temporal), backbone=visual,
                     text_features=text_features, fusion=fusion, num_frames=num_frames)
    model.weights_info = clip_model.weights_info
    return model
