"""Synthetic video pedestrian-attribute dataset in the MARS schema: the project's embedded default.

The benchmark must run end to end without the MARS / Duke downloads, and the numbers it produces should still reward
what a video PAR model is meant to do. So every MARS attribute (Chen et al., PRCV 2019; column order of VTF, Zhu et
al., CVPR-W 2023) is drawn where it would show in real footage, with numpy masks over whole frame stacks (no per-pixel
loops): clothing colours (``complex`` = two-colour stripes or checks), sleeve and trouser length (skin-coloured arms /
lower legs), skirt, bags, hat, long hair, gender build (shoulder vs hip width), age (size and head/height ratio; old =
grey hair and a stoop) and view angle (face from the front, hair and backpack block from the back, narrow profile from
the side).

Each group needs what its kind in ``data.schema.SYNTHETIC`` says, by construction:

- temporal: motion shows only as cues that differ between the tracklet's two halves (stance, scene displacement,
  distance; ``_tracks``), each a fair coin in any one frame, so one frame is at chance and frame 0 is identical for
  every class given the same latent draw; the shoulder bag and the hand bag show in one half of the tracklet only
  (``bag_half``), so one frame misses a bag half of the time and one frame from each half never does;
- spatial: the person stands at a random height scale, horizontal offset and feet row in the crop, so what is where
  on the body (colours of top and bottom, a backpack, proportions) cannot be read from where a patch lies in the
  frame: it needs the other parts;
- appearance: the rest, visible within one frame in a small area.

Per-frame occlusion, blur, jitter, clutter and noise make temporal pooling pay off, as in VTF's motivation (occluded /
blurred frames in MARS tracklets).

Everything is deterministic from ``(seed, split, index)``: each person has its own ``np.random.default_rng``.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from data.render_cache import TrackletCache, source_digest
from data.sampling import sample_frame_indices
from data.schema import MARS, SYNTHETIC, AttributeSchema
from data.transforms import augment_clip, clip_normalize

#: Class priors, one row per MARS group (schema class order). Binary groups: P(present). Multi-class: one probability
#: per class. Near flat, unlike real PAR data (mostly walking adults in dark bottoms): every class is common enough
#: that its F1 is measured on tens of test clips, so macro-F1 reads what a strategy learned rather than how it
#: guesses rare classes.
PRIORS: dict[str, tuple[float, ...]] = {
    "top short": (0.50,), "bottom short": (0.35,), "shoulder bag": (0.35,), "backpack": (0.35,), "hat": (0.30,),
    "hand bag": (0.30,), "long hair": (0.35,), "female": (0.45,), "bottom skirt": (0.20,),
    "pose": (0.20, 0.18, 0.18, 0.18, 0.20, 0.06),                  # frontal, lat-front, lateral, lat-back, back, varies
    "motion": (0.25, 0.20, 0.20, 0.20, 0.15),                      # walking, running, riding, staying, varies
    "top colour": (0.14, 0.09, 0.10, 0.12, 0.10, 0.12, 0.09, 0.12, 0.12),
    "bottom colour": (0.10, 0.08, 0.14, 0.09, 0.10, 0.08, 0.08, 0.13, 0.10, 0.10),
    "age": (0.20, 0.20, 0.40, 0.20),                               # young (child), teenager, adult, old
}
_RGB = {"black": (25, 25, 28), "purple": (118, 45, 150), "green": (40, 135, 60), "blue": (35, 70, 175),
        "gray": (125, 125, 125), "white": (232, 232, 228), "yellow": (228, 205, 40), "red": (195, 30, 35),
        "pink": (238, 145, 180), "brown": (115, 72, 38)}
_SKINS = ((241, 194, 160), (224, 172, 125), (190, 135, 95), (141, 85, 54), (95, 60, 40))
_HAIRS = ((20, 15, 12), (60, 38, 22), (110, 75, 40), (205, 170, 100))
_GREY_HAIR = (200, 200, 205)
_SPLITS = {"train": 0, "val": 1, "test": 2}
# Part ids painted into the label map; 0 is background.
_SKIN, _HAIR, _EYE, _TOP, _TOP2, _BOT, _BOT2, _SHOE, _PACK, _SBAG, _HBAG, _HAT, _OCC = range(1, 14)
_NUM_PARTS = 14
PARTS = dict(zip(("skin", "hair", "eye", "top", "top2", "bottom", "bottom2", "shoe", "backpack", "shoulder bag",
                  "hand bag", "hat", "occluder"), range(1, _NUM_PARTS), strict=True))
# Motion classes (walking, running, riding, staying, varies) -> which cues change between the tracklet's halves:
# (gait, displacement, distance). Walking: the stance alternates; running: stance and scene; riding: the scene only
# (no bicycle, so no frame shows it); staying: nothing; varies: the person comes nearer (the scale steps).
_MOTION_CUES = ((1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 0), (0, 0, 1))
_TILE = 4  # the scene is a periodic tile _TILE frames wide
_POLES = 8  # poles per tile: one every half frame width
_POLE_PERIOD = 1 / _POLES  # in tile widths; a moving scene shifts by half of it between the halves
_FAR_SCALE = 0.88  # body scale of a person who is farther away ("varies": steps to 1 between the halves)
# Per view (frontal, lat-front, lateral, lat-back, back): body width factor and share of limb swing seen in 2-D.
_WIDTH = (1.0, 0.8, 0.55, 0.8, 1.0)
_SWING = (0.25, 0.6, 1.0, 0.6, 0.25)
# Real tracklet crops are 2:1 (MARS: 256 x 128) and are resized to the square model input, which widens people
# by 1.75 (VTF resizes to 224 x 224); frames here are rendered as such a resized crop would look.
_CROP_STRETCH = 1 / 1.75
# Per age class: body height (fraction of the frame) and head height / body height.
_HEIGHT = (0.55, 0.78, 0.9, 0.86)
_HEAD = (0.22, 0.16, 0.135, 0.135)
# Where the person stands in the crop varies per tracklet (height scale, horizontal offset, feet row), so what is
# where on the body cannot be read from a patch's position in the frame: it needs the other parts (attention).
_BODY_SCALE, _BODY_SHIFT, _FEET = (0.65, 1.0), 0.15, (0.70, 1.0)
# Bags are carried so that each shows in one half of the tracklet only (hidden behind the body in the other): the
# half is a fair bit of the person's draw, so one frame sees a bag half of the time and two frames always do.
_BAG_BITS = {"shoulder bag": 0, "hand bag": 1}
BAG_GROUPS = tuple(_BAG_BITS)
_BAG_RGB = np.array([(250, 130, 20), (20, 215, 215)])  # orange shoulder bag, cyan hand bag
#: A split whose rendered tracklets fit in this many bytes keeps them in memory (the default run: ~85 MiB for train).
CACHE_LIMIT_BYTES = 512 * 2**20
_RENDERER_DIGEST = source_digest(__file__)  # part of every cache key: a changed renderer never reads old frames


class SyntheticDataError(ValueError):
    """Invalid synthetic-data configuration or request."""

    bad_input = True  # a bench.errors.BenchError: the command line prints the message alone (exit 2)


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes (tracklets per split), square frame size, frames per tracklet and the data seed (who exists)."""

    num_train: int = 1024
    num_val: int = 256
    num_test: int = 512
    image_size: int = 64
    tracklet_length: int = 16
    seed: int = 0

    def __post_init__(self):
        for name in ("num_train", "num_val", "num_test", "image_size", "tracklet_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SyntheticDataError(f"SyntheticConfig.{name} must be a positive int, got {value!r}")
        if self.image_size < 16:
            raise SyntheticDataError(f"SyntheticConfig.image_size must be >= 16, got {self.image_size}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SyntheticDataError(f"SyntheticConfig.seed must be a non-negative int, got {self.seed!r}")


@dataclass(frozen=True, eq=False)
class Person:
    """One tracklet's attributes (group name -> class index; binary groups 0/1) and latent nuisance parameters.

    Latents are drawn whatever the attributes are, so ``with_attribute`` changes one attribute and nothing else.
    ``frames`` holds per-frame draws (L, 11): occlusion (u, x, y, w, h), blur u, jitter normals (dx, dy, log-scale),
    noise-tile shift (x, y).
    """

    attrs: dict[str, int]
    palette: np.ndarray          # (_NUM_PARTS, 3) int16; top / bottom entries are filled from attrs at render time
    shade: np.ndarray            # (3,) per-person offset of clothing colours
    complex_pairs: np.ndarray    # (2, 2): two class indices per colour group for the "complex" pattern
    pattern: tuple[int, float]   # (0 horizontal stripes | 1 vertical stripes | 2 checks, frequency per body height)
    sides: np.ndarray            # (3,) +-1: facing direction, shoulder-bag side, hand-bag side
    views: np.ndarray            # (2,) the two views of "pose varies"
    motions: np.ndarray          # (2,) the two motion classes of "motion varies"
    switch: np.ndarray           # (2,) frame where pose / motion switches
    phi0: float
    scroll0: float
    body: np.ndarray             # (3,) height scale, horizontal offset, feet height (fractions of the frame)
    scene: np.ndarray            # (3, 3) base, pole and ground colours
    clutter: np.ndarray          # (12, 8): u, x, y, w, h, r, g, b per shape (rows 0-3: scene poles, x only)
    frames: np.ndarray           # (L, 11)
    noise_seed: int
    tracklet_length: int = field(default=16)

    def with_attribute(self, group: str, value: int | str) -> Person:
        """Copy with one attribute changed; ``value`` is a class index, a class name, or 0/1 for binary groups."""
        g = MARS.group(group)
        index = g.classes.index(value) if isinstance(value, str) and value in g.classes else value
        if isinstance(index, str) or not 0 <= int(index) < max(g.width, 2):
            raise SyntheticDataError(f"attribute {group!r}: expected a class name or index, got {value!r}")
        return replace(self, attrs={**self.attrs, group: int(index)})


def sample_person(rng: np.random.Generator, *, tracklet_length: int = 16) -> Person:
    """Draw attributes from ``PRIORS`` and all latent parameters, in a fixed order (determinism)."""
    attrs = {g.name: int(rng.random() < PRIORS[g.name][0]) if g.binary else int(rng.choice(g.width, p=PRIORS[g.name]))
             for g in MARS.groups}
    palette = np.zeros((_NUM_PARTS, 3), np.int16)
    palette[_SKIN] = _SKINS[rng.integers(len(_SKINS))]
    palette[_HAIR] = _HAIRS[rng.integers(len(_HAIRS))]
    palette[_EYE] = (15, 15, 20)
    palette[[_SHOE, _PACK, _SBAG, _HBAG, _HAT, _OCC]] = rng.integers(0, 256, (6, 3))
    palette[[_SBAG, _HBAG]] = _BAG_RGB + rng.integers(-12, 13, (2, 3))  # colours no garment has: a bag is a bag
    length = tracklet_length
    low, high = max(1, length // 4), max(2, 3 * length // 4 + 1)
    scene = rng.integers(40, 216, (3, 3))
    scene[1] = np.clip(scene[0] + rng.choice([-1, 1]) * 70, 0, 255)  # poles contrast with the base colour
    return Person(
        attrs=attrs, palette=palette, shade=rng.integers(-15, 16, 3), complex_pairs=np.stack(
            [rng.choice(8, 2, replace=False), rng.choice(9, 2, replace=False)]),
        pattern=(int(rng.integers(3)), float(rng.uniform(10, 16))), sides=rng.choice([-1, 1], 3),
        views=rng.choice(5, 2, replace=False), motions=rng.choice(4, 2, replace=False),
        switch=rng.integers(low, high, 2), phi0=float(rng.uniform(0, 2 * np.pi)), scroll0=float(rng.random()),
        body=np.array([rng.uniform(*_BODY_SCALE), rng.uniform(-_BODY_SHIFT, _BODY_SHIFT), rng.uniform(*_FEET)]),
        scene=scene,
        clutter=np.concatenate([rng.random((12, 5)), rng.integers(0, 256, (12, 3))], axis=1),
        frames=np.concatenate([rng.random((length, 6)), rng.standard_normal((length, 3)),
                               rng.random((length, 2))], axis=1),
        noise_seed=int(rng.integers(2**31)), tracklet_length=length)


def labels_of(person: Person, schema: AttributeSchema = MARS) -> np.ndarray:
    """(A,) float32 one-hot labels in schema column order."""
    labels = np.zeros(schema.num_columns, np.float32)
    for start, group in zip(schema.boundaries, schema.groups, strict=False):
        value = person.attrs[group.name]
        if not group.binary:
            labels[start + value] = 1.0
        elif value:
            labels[start] = 1.0
    return labels


def _tracks(person: Person) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame view, gait phase, background scroll and body scale over the whole tracklet, each (L,).

    Motion shows as cues that differ between the tracklet's two halves (``_MOTION_CUES``): gait (the stance
    alternates between legs together and legs apart), displacement (the scene moves by half a pole period) and, for
    "varies", a change of distance (the body scale steps). Each cue's value in any one frame is a fair coin drawn
    from ``phi0`` / ``scroll0`` for every class, so one frame is at chance; across the halves a moving class shows
    both values, a still one the same value twice.
    """
    t = np.arange(person.tracklet_length)
    pose, motion = person.attrs["pose"], person.attrs["motion"]
    views = np.full(t.shape, pose) if pose < 5 else np.where(t < person.switch[0], *person.views)
    second = half_of(t, person.tracklet_length)  # (L,) 0 in the first half, 1 in the second
    gait, shift, zoom = _MOTION_CUES[motion]
    stance = (int(person.phi0 // np.pi) + gait * second) % 2  # two fair bits of phi0 ~ U[0, 2 pi)
    near = (int(person.phi0 // (np.pi / 2)) + zoom * second) % 2
    phase = stance * (np.pi / 2)  # sin: 0 = legs together, 1 = legs apart
    scroll = person.scroll0 + shift * second * _POLE_PERIOD / 2
    scale = np.where(near == 1, 1.0, _FAR_SCALE)
    return views, phase.astype(np.float64), scroll % 1.0, scale


class _Canvas:
    """Part-id label map (T, S, S) with body coordinates u (T, 1, S), v (T, S, 1) (see ``_local_grids``).

    Every shape is evaluated only inside the pixel window that covers its bounding box in all T frames, so a limb
    costs a few percent of the frame instead of all of it; the masks are the same as on the full frame.
    """

    def __init__(self, parts: np.ndarray, u: np.ndarray, v: np.ndarray):
        self.parts, self.u, self.v = parts, u, v

    def paint(self, pid, box, shape, keep=None) -> None:
        """Paint ``pid`` (a part id, or for limbs a function of the position t along them) where ``shape`` holds."""
        cols = np.flatnonzero(((self.u >= np.min(box[0])) & (self.u <= np.max(box[1]))).any(axis=(0, 1)))
        rows = np.flatnonzero(((self.v >= np.min(box[2])) & (self.v <= np.max(box[3]))).any(axis=(0, 2)))
        if cols.size and rows.size:
            r, c = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
            u, v = self.u[:, :, c], self.v[:, r, :]  # (T, 1, w), (T, h, 1)
            mask, t = shape(u, v)
            mask = mask if keep is None else mask & keep(u, v)
            np.copyto(self.parts[:, r, c], pid if t is None else pid(t), where=mask)

    def rect(self, pid, u0, u1, v0, v1, keep=None) -> None:
        self.paint(pid, (u0, u1, v0, v1), lambda u, v: ((u >= u0) & (u <= u1) & (v >= v0) & (v <= v1), None), keep)

    def ellipse(self, pid, cu, cv, ru, rv, keep=None) -> None:
        self.paint(pid, (cu - ru, cu + ru, cv - rv, cv + rv),
                   lambda u, v: (((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0, None), keep)

    def trapezoid(self, pid, *, cu, v0, v1, half0, half1) -> None:
        def shape(u, v):
            frac = (v - v0) / (v1 - v0)
            return (frac >= 0) & (frac <= 1) & (np.abs(u - cu) <= half0 + (half1 - half0) * frac), None
        self.paint(pid, (cu - max(half0, half1), cu + max(half0, half1), v0, v1), shape)

    def capsule(self, pid, a, b, radius, keep=None) -> None:
        """Thick segment a -> b ((u, v) points, per-frame arrays allowed); a callable ``pid`` gets the position t."""
        def shape(u, v):
            du, dv = b[0] - a[0], b[1] - a[1]
            t = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
            mask = (u - a[0] - t * du) ** 2 + (v - a[1] - t * dv) ** 2 <= radius * radius
            return mask, (t if callable(pid) else None)
        box = (np.minimum(a[0], b[0]) - radius, np.maximum(a[0], b[0]) + radius,
               np.minimum(a[1], b[1]) - radius, np.maximum(a[1], b[1]) + radius)
        self.paint(pid, box, shape, keep)

    def limbs(self, *, joints, ends, radius, upper, lower, end, split) -> None:
        """Capsules joint -> end: ``upper`` part id before ``split``, ``lower`` after, ``end`` on the last 10 %."""
        ids = np.uint8(upper), np.uint8(lower), np.uint8(end)
        for a, b in zip(joints, ends, strict=True):
            self.capsule(lambda t: np.where(t < split, ids[0], np.where(t > 0.9, ids[2], ids[1])), a, b, radius)


def _draw_body(canvas: _Canvas, p: Person, view: int, phase, second) -> None:
    """Legs, skirt, torso, arms and bags in body units (v: 0 head top -> 1 feet; u: from the body axis; per height)."""
    a, wf, sw_ = p.attrs, _WIDTH[view], _SWING[view]
    hf = _HEAD[a["age"]]
    sh_v, hip_v = hf + 0.03, hf + (1 - hf) * 0.45
    sw, hw = (0.105 if a["female"] else 0.13) * wf, (0.12 if a["female"] else 0.095) * wf
    swing = np.sin(phase).astype(np.float32)  # float32 keeps every mask op in single precision
    reach = max(sw_, 0.7)  # legs apart show in every view (spread sideways from the front, in stride from the side)
    lower = _SKIN if a["bottom short"] or a["bottom skirt"] else _BOT
    feet = [(s * hw * 0.5 + s * 0.01 + k * 0.14 * swing * reach, 0.98 - 0.04 * np.maximum(k * swing, 0) * (1 - sw_))
            for s, k in ((-1, 1), (1, -1))]
    canvas.limbs(joints=[(s * hw * 0.5, hip_v) for s in (-1, 1)], ends=feet, radius=0.04 * max(wf, 0.8),
             upper=_BOT, lower=lower, end=_SHOE, split=0.5)
    if a["bottom skirt"]:
        canvas.trapezoid(_BOT, cu=0.0, v0=hip_v - 0.03, v1=0.72 if a["bottom short"] else 0.9, half0=hw,
                     half1=hw * 1.5 + 0.05)
    if a["backpack"] and view in (1, 2):  # the block sticks out behind a turned body
        canvas.rect(_PACK, *sorted([-p.sides[0] * (sw + 0.07), 0.0]), sh_v + 0.02, hip_v - 0.04)
    canvas.rect(_SKIN, -0.03, 0.03, hf - 0.01, sh_v + 0.01)
    canvas.trapezoid(_TOP, cu=0.0, v0=sh_v, v1=hip_v + 0.02, half0=sw, half1=hw)
    hands = [(s * (sw + 0.035) - k * 0.12 * swing * reach, sh_v + 0.4 * (1 - hf)) for s, k in ((-1, 1), (1, -1))]
    canvas.limbs(joints=[(s * (sw - 0.01), sh_v + 0.015) for s in (-1, 1)], ends=hands, radius=0.028,
             upper=_TOP, lower=_SKIN if a["top short"] else _TOP, end=_SKIN, split=0.45)
    _draw_bags(canvas, p, view=view, sw=sw, hw=hw, levels=(sh_v, hip_v), hands=hands, second=second)


def _draw_bags(canvas: _Canvas, p: Person, *, view, sw, hw, levels, hands, second) -> None:
    """Backpack straps (front) or block (back), shoulder-bag strap and hip bag, hand bag hanging from one hand."""
    a, (sh_v, hip_v) = p.attrs, levels
    if a["backpack"] and view <= 1:
        for s in (-1, 1) if view == 0 else (p.sides[0],):
            canvas.rect(_PACK, s * sw * 0.55 - 0.015, s * sw * 0.55 + 0.015, sh_v, sh_v + 0.17)
    if a["backpack"] and view >= 3:
        cu = -p.sides[0] * 0.03 * (view == 3)
        canvas.rect(_PACK, cu - sw * 0.6, cu + sw * 0.6, sh_v + 0.03, hip_v - 0.04)
    if a["shoulder bag"]:
        s, shown = p.sides[1], bag_shown(p, "shoulder bag", second)
        canvas.capsule(_SBAG, (s * sw * 0.8, sh_v), (-s * (hw + 0.03), hip_v), 0.02, keep=shown)
        canvas.rect(_SBAG, -s * (hw + 0.03) - 0.15, -s * (hw + 0.03) + 0.15, hip_v - 0.10, hip_v + 0.16, keep=shown)
    if a["hand bag"]:
        hu, hv = hands[(p.sides[2] + 1) // 2]
        canvas.rect(_HBAG, hu - 0.14, hu + 0.14, hv + 0.01, hv + 0.27, keep=bag_shown(p, "hand bag", second))


def half_of(frames, tracklet_length: int):
    """Which half of a tracklet each frame index lies in: 0 for the first ``tracklet_length // 2`` frames, 1 after
    (an int for an int, an int64 array for an array). The one place the renderer, the motion cues and the captions
    learn where a tracklet's halves meet."""
    second = np.asarray(frames) >= tracklet_length // 2
    return second.astype(np.int64) if second.ndim else int(second)


def bag_half(p: Person, bag: str) -> int:
    """The half of the tracklet (0 first, 1 second) in which ``bag`` shows: a fair bit of the person's draw."""
    return (p.noise_seed >> _BAG_BITS[bag]) & 1


def bag_shown(p: Person, bag: str, second: np.ndarray):
    """``keep`` mask of a bag: True on the frames of the half (``second``: (T, 1, 1) 0 / 1) the bag shows in."""
    half = bag_half(p, bag)
    return lambda u, v: second == half


def _draw_head(canvas: _Canvas, p: Person, view: int) -> None:
    """Long hair, head (hair colour), face by view (frontal face, profile, ear, none) and hat."""
    a, d = p.attrs, p.sides[0]
    hf, old = _HEAD[a["age"]], a["age"] == 3
    cu, cv, rv = d * 0.035 * _SWING[view] * old, hf / 2 + 0.02 * old, hf / 2  # old: head bent forward and down
    ru = hf * 0.36 * (0.85 + 0.15 * _WIDTH[view])
    if a["long hair"]:  # frontal: two strands beside the face; lateral: behind the head; back: a block
        lo, hi = (cu - ru * 1.2, cu + ru * 1.2) if view != 2 else sorted([cu, cu - d * ru * 1.3])
        canvas.rect(_HAIR, lo, hi, cv, hf + 0.14, keep=(lambda u, v: np.abs(u - cu) > ru * 0.55) if view <= 1 else None)
    canvas.ellipse(_HAIR, cu, cv, ru, rv)
    if view <= 1:
        fu = cu + d * ru * 0.3 * view
        canvas.ellipse(_SKIN, fu, cv + rv * 0.2, ru * (0.85 - 0.15 * view), rv * 0.75)
        for s in (-1, 1):
            canvas.ellipse(_EYE, fu + s * ru * 0.38, cv + rv * 0.05, 0.014, 0.012)
    elif view == 2:
        canvas.ellipse(_SKIN, cu, cv, ru, rv, keep=lambda u, v: ((u - cu) * d > -0.2 * ru) & (v > cv - rv * 0.3))
        canvas.ellipse(_EYE, cu + d * ru * 0.5, cv, 0.014, 0.012)
    elif view == 3:
        canvas.ellipse(_SKIN, cu + d * ru * 0.8, cv + rv * 0.1, ru * 0.25, rv * 0.3)
    if a["hat"]:
        canvas.ellipse(_HAT, cu, cv, ru * 1.08, rv * 1.08, keep=lambda u, v: v < cv - rv * 0.3)
        lo, hi = (cu - ru * 1.35, cu + ru * 1.35) if view in (0, 4) else sorted([cu - d * ru, cu + d * ru * 1.7])
        canvas.rect(_HAT, lo, hi, cv - rv * 0.42, cv - rv * 0.25)


def _colourise(parts, u, v, p: Person, background: np.ndarray) -> np.ndarray:
    """Label map (T, S, S) -> colours painted over ``background`` (T, S, S, 3) float32, in place.

    "complex" clothes get a two-colour body-fixed pattern (stripes or checks) that moves with the person.
    """
    palette = p.palette.astype(np.float32)
    for g, main, second, pair in (("top colour", _TOP, _TOP2, 0), ("bottom colour", _BOT, _BOT2, 1)):
        classes, value = MARS.group(g).classes, p.attrs[g]
        names = [classes[i] for i in p.complex_pairs[pair]] if classes[value] == "complex" else [classes[value]] * 2
        palette[[main, second]] = np.clip(np.array([_RGB[n] for n in names]) + p.shade, 0, 255)
    if p.attrs["age"] == 3:
        palette[_HAIR] = _GREY_HAIR
    if p.attrs["top colour"] == 8 or p.attrs["bottom colour"] == 9:
        kind, freq = p.pattern
        stripes_u, stripes_v = np.floor(u * freq) % 2 == 1, np.floor(v * freq) % 2 == 1
        pattern = stripes_v if kind == 0 else stripes_u if kind == 1 else stripes_u ^ stripes_v
        parts = np.where(pattern & ((parts == _TOP) | (parts == _BOT)), parts + 1, parts)  # _TOP2 / _BOT2 follow
    person = parts != 0
    background[person] = palette[parts[person]]
    return background


def _background(p: Person, scroll: np.ndarray, *, size: int, scale: float) -> np.ndarray:
    """(T, S, S, 3) scene seen by a camera that tracks the person: a periodic tile, _TILE frames wide, scrolled by
    ``scroll`` (T,) tile widths. It always has a ground band and a pole every ``_POLE_PERIOD`` (so a moving scene
    shows with nuisances off); ``scale`` adds clutter shapes. Shapes are periodic in x, so no seam in a frame can
    reveal the scroll.
    """
    width = size * _TILE
    tile = np.empty((size, width + size, 3), np.float32)  # + a wrap-around copy, so every frame is one slice
    tile[:] = p.scene[0]
    tile[round(0.8 * size):] = p.scene[2]
    spans = [(round((j + p.clutter[0, 1]) * width / _POLES), max(1, round(0.08 * size)), slice(0, size), p.scene[1])
             for j in range(_POLES)]
    for u, cx, cy, w, h, *rgb in p.clutter[4:]:
        if u < 0.6 * scale:
            half = 0.05 + 0.2 * h
            rows = slice(max(0, round((cy - half) * size)), round((cy + half) * size))
            spans.append((round(cx * width), max(1, round((0.1 + 0.3 * w) * size)), rows, rgb))
    for start, span, rows, colour in spans:
        for c0 in (start % width, start % width - width):  # what runs past the right edge reappears on the left
            tile[rows, max(c0, 0):max(min(c0 + span, width), 0)] = colour
    tile[:, width:] = tile[:, :size]
    return np.stack([tile[:, o:o + size] for o in np.floor(scroll * width).astype(np.int64)])  # (T, S, S, 3)


def _local_grids(p: Person, f: np.ndarray, phase: np.ndarray, near: np.ndarray, *, size: int, scale: float):
    """Pixel centres in body units per frame: u (T, 1, S) across, v (T, S, 1) down from the head top.

    Jitter (shift, log-scale) scales with ``scale``; the gait bob depends on |sin phase| only, like the limbs.
    """
    h = size * _HEIGHT[p.attrs["age"]] * p.body[0] * near * np.exp(0.05 * scale * f[:, 8])
    feet = size * (p.body[2] + 0.02 * scale * f[:, 7]) - 0.015 * h * np.abs(np.sin(phase))
    cx = size * (0.5 + p.body[1] + 0.03 * scale * f[:, 6])
    px = np.arange(size, dtype=np.float32) + 0.5
    h, top, cx = h[:, None, None], (feet - h)[:, None, None], cx[:, None, None]  # (T,) -> (T, 1, 1)
    u = (px[None, None, :] - cx) * _CROP_STRETCH / h  # (S,) -> (1, 1, S) -> (T, 1, S)
    v = (px[None, :, None] - top) / h  # (S,) -> (1, S, 1) -> (T, S, 1)
    return u.astype(np.float32), v.astype(np.float32)


def _occlude(canvas: _Canvas, f: np.ndarray, scale: float) -> None:
    """Paint a block over part of the person on a random subset of frames (body-relative position and size)."""
    on = (f[:, 0] < 0.15 * scale)[:, None, None]  # (T,) -> (T, 1, 1), like every per-frame value below
    if on.any():
        cu, cv = ((f[:, 1] - 0.5) * 0.5)[:, None, None], (0.2 + 0.8 * f[:, 2])[:, None, None]
        hu, hv = (0.1 + 0.25 * f[:, 3])[:, None, None], (0.1 + 0.25 * f[:, 4])[:, None, None]
        canvas.rect(_OCC, cu - hu, cu + hu, cv - hv, cv + hv, keep=lambda u, v: on)


def _box_blur(img: np.ndarray, k: int) -> np.ndarray:
    """Separable k x k box blur of (T, S, S, 3) float frames with edge padding; running sums make it O(1) in k."""
    pad = k // 2
    out = np.pad(img, ((0, 0), (pad + 1, pad), (pad + 1, pad), (0, 0)), mode="edge").cumsum(1).cumsum(2)
    out = out[:, k:] - out[:, :-k]  # window sums along rows: the leading extra pad row cancels
    return (out[:, :, k:] - out[:, :, :-k]) / (k * k)


def _noise_and_blur(img: np.ndarray, p: Person, f: np.ndarray, scale: float) -> np.ndarray:
    """Sensor noise (a per-tracklet tile shifted per frame: cheap) and blur on a random subset of frames."""
    size = img.shape[1]
    if scale > 0:
        tile = np.random.default_rng(p.noise_seed).standard_normal((size, size, 3), np.float32) * (6.0 * scale)
        tile = np.pad(tile, ((0, size), (0, size), (0, 0)), mode="wrap")  # periodic: every shift is a slice
        for t, (dy, dx) in enumerate(np.floor(f[:, 9:11] * size).astype(np.int64)):
            img[t] += tile[dy:dy + size, dx:dx + size]
    blurred = f[:, 5] < 0.2 * scale
    if blurred.any():
        img[blurred] = _box_blur(img[blurred], 2 * max(1, round(size / 64)) + 1)
    return img


def render_frames(person: Person, frame_indices: Sequence[int] | np.ndarray, *, image_size: int,
                  nuisance_scale: float = 1.0) -> np.ndarray:
    """Render the chosen frames of a person's tracklet -> (T, S, S, 3) uint8.

    ``nuisance_scale`` multiplies occlusion / blur probability, jitter, clutter and noise: 0 = clean, 1 = the
    dataset default, > 1 = wider ranges (e.g. for contrastive pre-training on single frames).
    """
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= person.tracklet_length:
        raise SyntheticDataError(f"frame_indices must lie in [0, {person.tracklet_length}), got {idx.tolist()}")
    if image_size < 16 or nuisance_scale < 0:
        raise SyntheticDataError(f"need image_size >= 16 and nuisance_scale >= 0, got {image_size}, {nuisance_scale}")
    parts, u, v = _part_map(person, idx, image_size=image_size, nuisance_scale=nuisance_scale)
    scroll = _tracks(person)[2][idx]
    img = _colourise(parts, u, v, person, _background(person, scroll, size=image_size, scale=nuisance_scale))
    img = _noise_and_blur(img, person, person.frames[idx], nuisance_scale)
    return np.clip(img, 0, 255).astype(np.uint8)


def part_map(person: Person, frame_indices: Sequence[int] | np.ndarray, *, image_size: int,
             nuisance_scale: float = 1.0) -> np.ndarray:
    """(T, S, S) uint8 body-part ids of the frames ``render_frames`` draws (``PARTS`` names them; 0 = background):
    where every part lands, for checks of what an attribute's evidence needs."""
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    return _part_map(person, idx, image_size=image_size, nuisance_scale=nuisance_scale)[0]


def _part_map(person: Person, idx: np.ndarray, *, image_size: int, nuisance_scale: float):
    views, phase, _, near = (track[idx] for track in _tracks(person))
    second = half_of(idx, person.tracklet_length)  # (T,) which half each frame lies in
    f = person.frames[idx]
    u, v = _local_grids(person, f, phase, near, size=image_size, scale=nuisance_scale)
    parts = np.zeros((idx.size, image_size, image_size), np.uint8)
    for view in np.unique(views):
        sel = np.flatnonzero(views == view)
        canvas = _Canvas(parts[sel], u[sel], v[sel])
        _draw_body(canvas, person, int(view), phase[sel, None, None], second[sel, None, None])  # (T,) -> (T, 1, 1)
        _draw_head(canvas, person, int(view))
        parts[sel] = canvas.parts
    _occlude(_Canvas(parts, u, v), f, nuisance_scale)
    return parts, u, v


class SyntheticVideoPAR(torch.utils.data.Dataset):
    """Video PAR dataset of procedurally rendered tracklets; item = (CLIP-normalised (T, 3, S, S), (43,) labels).

    Frames are picked with ``sample_frame_indices``: segment centres when ``train`` is False, random offsets when it
    is True, from a Generator keyed on (sample_seed, epoch, index, draw count of this copy), so runs repeat exactly
    and every access draws new offsets. DataLoader workers hold fresh copies each epoch (counts start at 0 again), so
    there the key also takes the worker's per-epoch torch seed; a loop that calls ``set_epoch`` gets offsets that do
    not depend on the number of workers either.
    """

    def __init__(self, cfg: SyntheticConfig, split: str, *, num_frames: int, train: bool, sample_seed: int = 0,
                 image_size: int | None = None, augment: str = "none", augment_pad: int = 10):
        if split not in _SPLITS:
            raise SyntheticDataError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        if num_frames < 1 or (image_size is not None and image_size < 16):
            raise SyntheticDataError(f"need num_frames >= 1 and image_size >= 16, got {num_frames}, {image_size}")
        self.cfg, self.split, self.num_frames, self.train = cfg, split, num_frames, train
        self.sample_seed, self.epoch = sample_seed, 0
        self.augment, self.augment_pad = augment, augment_pad  # training only (data/transforms.py)
        self.image_size = image_size or cfg.image_size
        self.schema: AttributeSchema = SYNTHETIC
        size = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}[split]
        self.people = [sample_person(np.random.default_rng([cfg.seed, _SPLITS[split], i]),
                                     tracklet_length=cfg.tracklet_length) for i in range(size)]
        self.labels = np.stack([labels_of(p) for p in self.people])  # (N, A)
        # Every synthetic person is its own identity, keyed like its random generator: (data seed, split, index).
        self.track_ids = [f"synthetic-{cfg.seed}-{split}-{i}" for i in range(size)]
        self.pids = self.track_ids
        self._draws = np.zeros(size, np.int64)
        shape = (cfg.tracklet_length, self.image_size, self.image_size, 3)
        self._cache = None
        if size * int(np.prod(shape)) <= CACHE_LIMIT_BYTES:
            key = {"renderer": _RENDERER_DIGEST, "seed": cfg.seed, "split": split, "count": size,
                   "shape": shape}
            self._cache = TrackletCache(count=size, shape=shape, key=key, render=self._render_whole)

    def __len__(self) -> int:
        return len(self.people)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _draw(self, i: int) -> np.random.Generator:
        """A fresh generator for one training access of item ``i`` (frame offsets, then augmentation)."""
        worker = torch.utils.data.get_worker_info()
        key = [self.sample_seed, self.epoch, i, int(self._draws[i])] + ([worker.seed] if worker is not None else [])
        self._draws[i] += 1
        return np.random.default_rng(key)

    def frame_indices(self, i: int, rng: np.random.Generator | None = None) -> list[int]:
        """The frames item ``i`` shows on this access (train: a fresh random draw per access)."""
        if not self.train:
            return sample_frame_indices(self.cfg.tracklet_length, self.num_frames, train=False)
        rng = rng if rng is not None else self._draw(i)
        return sample_frame_indices(self.cfg.tracklet_length, self.num_frames, train=True, rng=rng)

    def render_tracklet(self, i: int, frame_indices: list[int] | None = None) -> np.ndarray:
        """(T, S, S, 3) uint8 frames of item ``i``; all ``tracklet_length`` frames when no indices are given.

        A frame depends only on (person, frame index), so when the split fits in ``CACHE_LIMIT_BYTES`` the whole
        tracklet is rendered once and later accesses index it (data/render_cache.py; a 2-frame clip costs about
        60 % of a 16-frame render, per-tracklet set-up dominates): epochs after the first, and later runs of a
        sweep, render nothing.
        """
        if self._cache is None:
            indices = range(self.cfg.tracklet_length) if frame_indices is None else frame_indices
            return render_frames(self.people[i], indices, image_size=self.image_size)
        frames = self._cache.get(i)
        return frames.copy() if frame_indices is None else frames[list(frame_indices)]

    def _render_whole(self, i: int) -> np.ndarray:
        return render_frames(self.people[i], range(self.cfg.tracklet_length), image_size=self.image_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {self.split} split of size {len(self)}")
        rng = self._draw(i) if self.train else None
        frames = self.render_tracklet(i, self.frame_indices(i, rng))
        if self.train:
            frames = augment_clip(frames, rng, mode=self.augment, pad=self.augment_pad)
        return clip_normalize(torch.from_numpy(frames)), torch.from_numpy(self.labels[i].copy())


def measure_render_speed(*, num_tracklets: int = 64, num_frames: int = 16, image_size: int = 64,
                         repeats: int = 3) -> float:
    """Frames per second of ``render_frames`` on the calling thread, best of ``repeats`` (as ``timeit`` does: the
    least disturbed run); people are sampled outside the timed loop."""
    people = [sample_person(np.random.default_rng([0, 9, i]), tracklet_length=num_frames) for i in range(num_tracklets)]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for person in people:
            render_frames(person, range(num_frames), image_size=image_size)
        best = min(best, time.perf_counter() - start)
    return num_tracklets * num_frames / best


if __name__ == "__main__":
    for size, frames in ((48, 16), (48, 2), (64, 16)):  # 48 px: the embedded default's par-vit-tiny input
        speed = measure_render_speed(num_frames=frames, image_size=size)
        print(f"{speed:.0f} frames/s at {size}x{size} ({frames}-frame clips, one thread)")
