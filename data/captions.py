"""Image / caption pairs for contrastive pre-training of the small CLIP backbones on synthetic pedestrians.

CLIP (Radford et al., ICML 2021) learns from web captions that describe what a picture shows; the paper's claim
that a frozen CLIP plus a small tuned part does well rests on that prior. The embedded default backbone gets a
small, honest stand-in: single frames of synthetic pedestrians (data/synthetic.py) paired with captions from a
template grammar. The grammar describes static appearance only -- clothing colours, sleeve and bottom length, skirt,
bags, hat, long hair, gender -- and never motion, pose or age (``OMITTED_GROUPS``), so a downstream PAR model still
has to learn those groups itself (motion cannot be seen in one frame anyway).

Data are wider than the PAR task's: every class is equally likely (``PRIORS`` skews them), nuisances are scaled by
up to ``nuisance_max`` (PAR uses 1), scene colours cover the full range, and the image is randomly rescaled,
shifted and flipped. People are keyed ``(data_seed, split_id, index)`` with ``split_id >= 10``
(``PRETRAIN_SPLIT`` / ``HELD_OUT_SPLIT``): the PAR splits use ids 0-2, so no PAR train / val / test person is drawn.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from data.schema import MARS
from data.synthetic import BAG_GROUPS, Person, bag_half, half_of, render_frames, sample_person
from data.transforms import clip_normalize

GRAMMAR_VERSION = "2"
#: PAR groups a caption may describe, and the ones it never mentions.
DESCRIBED_GROUPS = ("top colour", "bottom colour", "top short", "bottom short", "bottom skirt", "shoulder bag",
                    "backpack", "hand bag", "hat", "long hair", "female")
OMITTED_GROUPS = ("pose", "motion", "age")
PRETRAIN_SPLIT, HELD_OUT_SPLIT = 10, 11
MIN_SPLIT_ID = 10
#: Longest caption in words + commas: the 32-token context keeps room for start / end tokens and split words.
MAX_LENGTH = 23

_COLOURS = {"black": ("black",), "purple": ("purple", "violet"), "green": ("green",), "blue": ("blue",),
            "gray": ("gray", "grey"), "white": ("white",), "yellow": ("yellow",), "red": ("red",),
            "pink": ("pink",), "brown": ("brown",), "complex": ("patterned", "multicoloured", "two-coloured")}
_TOPS = ("top", "shirt")
_SLEEVES = {1: ("short-sleeved", "short-sleeve"), 0: ("long-sleeved", "long-sleeve")}
# (skirt, short) -> bottom nouns; plural nouns take no article.
_BOTTOMS = {(0, 0): ("trousers", "pants", "long trousers"), (0, 1): ("shorts", "short trousers"),
            (1, 1): ("short skirt", "mini skirt"), (1, 0): ("long skirt",)}
_PLURAL = ("trousers", "pants", "shorts", "bottoms")
_ITEMS = {"shoulder bag": ("a shoulder bag", "a messenger bag"), "backpack": ("a backpack", "a rucksack"),
          "hand bag": ("a handbag", "a hand bag"), "hat": ("a hat", "a cap")}
_SUBJECTS = {None: ("a person", "a pedestrian", "someone"), 1: ("a woman", "a female pedestrian"),
             0: ("a man", "a male pedestrian")}
_PREFIXES = ("", "", "a photo of ", "an image of ", "a picture of ")


class CaptionError(ValueError):
    """Invalid caption or pair-generator request."""


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    """'a' / 'an' before a singular noun phrase; nothing before a plural one."""
    if phrase.split()[-1] in _PLURAL:
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def colour_word(group: str, index: int, rng: np.random.Generator | None = None) -> str:
    """The word for class ``index`` of a colour group (first spelling without an rng)."""
    words = _COLOURS[MARS.group(group).classes[index]]
    return words[0] if rng is None else _pick(rng, words)


def _top_phrase(attrs: Mapping[str, int], said: set[str], rng: np.random.Generator) -> str | None:
    colour = colour_word("top colour", attrs["top colour"], rng) if "top colour" in said else None
    sleeve = _pick(rng, _SLEEVES[attrs["top short"]]) if "top short" in said else None
    if colour is None and sleeve is None:
        return None
    noun = _pick(rng, _TOPS)
    if sleeve is not None and colour is not None and rng.random() < 0.3:
        return _article(f"{colour} {noun} with {sleeve.split('-')[0]} sleeves")
    return _article(" ".join(w for w in (colour, sleeve, noun) if w))


def _bottom_phrase(attrs: Mapping[str, int], said: set[str], rng: np.random.Generator) -> str | None:
    colour = colour_word("bottom colour", attrs["bottom colour"], rng) if "bottom colour" in said else None
    skirt, short = attrs["bottom skirt"], attrs["bottom short"]
    if "bottom short" in said or "bottom skirt" in said:  # the garment noun states both (true either way)
        noun = _pick(rng, _BOTTOMS[(skirt, short)] + (("skirt",) if skirt and "bottom short" not in said else ()))
    elif colour is None:
        return None
    else:
        noun = "bottoms"
    return _article(" ".join(w for w in (colour, noun) if w))


def _extras(attrs: Mapping[str, int], said: set[str], rng: np.random.Generator) -> list[str]:
    """Bags, hat (present: 'carrying a backpack'; absent: 'without a hat') and hair length."""
    out = []
    for group, words in _ITEMS.items():
        if group in said:
            verb = ("wearing " if group == "hat" else "carrying ") if rng.random() < 0.5 else "with "
            out.append(verb + _pick(rng, words) if attrs[group] else "without " + words[0])
    if "long hair" in said:
        out.append("with long hair" if attrs["long hair"] else "with short hair")
    return out


def _mentioned(attrs: Mapping[str, int], rng: np.random.Generator, must_say: frozenset[str] = frozenset()
               ) -> set[str]:
    """A random subset of the described groups, with ``must_say`` always in it; absent bags / hat are named less
    often (negation is weak). One draw per group whatever the attributes, so two people who differ in one attribute
    get the same subset from the same generator."""
    said = set(must_say)
    for group in DESCRIBED_GROUPS:
        absent = group in _ITEMS and not attrs[group]
        if rng.random() < (0.2 if absent else 0.6):
            said.add(group)
    return said or {str(_pick(rng, ("top colour", "bottom colour")))}


def _length(text: str) -> int:
    """Words, hyphens and commas: a lower bound on the BPE tokens of a caption (each comma and each hyphen is a token,
    and a hyphenated word is at least its parts: "two-coloured long-sleeve" is 6)."""
    return len(text.replace("-", " - ").split()) + text.count(",")


def _compose(subject: str, clothes: list[str], extras: list[str], rng: np.random.Generator):
    """Draw the sentence form and its connectors once; return ``text(n)``, the caption with the first n extras."""
    form, prefix, verb = rng.random(), _pick(rng, _PREFIXES), _pick(rng, ("in", "wearing", "dressed in"))
    commas, keys = rng.random(len(extras)) < 0.5, rng.random(len(clothes) + len(extras) + 1)

    def text(n: int) -> str:
        if form < 0.55:
            worn = f" {verb} " + " and ".join(clothes) if clothes else ""
            joins = [(", " if c else " ") + e for c, e in zip(commas[:n], extras[:n], strict=True)]
            return prefix + subject + worn + "".join(joins)
        if form < 0.85:
            return subject + (" wearing " if clothes else " ") + ", ".join(clothes + extras[:n])
        tags = clothes + extras[:n] + [subject]
        order = np.argsort(np.concatenate([keys[:len(clothes) + n], keys[-1:]]), kind="stable")
        return ", ".join(tags[i] for i in order)
    return text


def caption(attrs: Mapping[str, int], rng: np.random.Generator, *, must_say: frozenset[str] = frozenset()) -> str:
    """A caption naming a random subset of the static attributes in ``attrs``, in random order and wording.

    Forms: prose ("a woman in a red top and black trousers carrying a backpack"), a subject with a list ("a person
    wearing a white shirt, blue shorts, with a hat") and a tag list ("red top, with a backpack, woman"). Trailing
    extras are dropped while the caption is longer than ``MAX_LENGTH`` words, hyphens and commas, so it fits the
    context.
    """
    missing = [g for g in DESCRIBED_GROUPS if g not in attrs]
    if missing:
        raise CaptionError(f"caption attrs: missing groups {missing}")
    said = _mentioned(attrs, rng, must_say)
    clothes = [p for p in (_top_phrase(attrs, said, rng), _bottom_phrase(attrs, said, rng)) if p]
    extras = _extras(attrs, said, rng)
    rng.shuffle(clothes)
    rng.shuffle(extras)
    subject = _pick(rng, _SUBJECTS[attrs["female"] if "female" in said else None])
    text = _compose(subject, clothes, extras, rng)
    n = len(extras)
    while n > 0 and _length(text(n)) > MAX_LENGTH:
        n -= 1
    return text(n)


def zero_shot_prompts(group: str) -> list[str]:
    """One prompt per class of a colour group, in schema class order: 'a person in a red top' / '... red bottoms'."""
    if group not in ("top colour", "bottom colour"):
        raise CaptionError(f"zero_shot_prompts: expected 'top colour' or 'bottom colour', got {group!r}")
    noun = "top" if group == "top colour" else "bottoms"
    return [f"a person in {_article(colour_word(group, i) + ' ' + noun)}" for i in range(MARS.group(group).width)]


@dataclass(frozen=True)
class PairConfig:
    """Which people exist (``data_seed``, ``split_id`` >= 10) and how wide their rendering is.

    ``wide`` (pre-training): nuisance scale uniform in [0, ``nuisance_max``], full-range scene colours and a random
    rescale / shift / horizontal flip. Not ``wide`` (held-out checks): nuisance 1 and PAR scenes, i.e. frames as the
    PAR task renders them. Classes are uniform either way.

    ``twins`` (hard negatives): pair ``2k + 1`` is pair ``2k``'s person, frame, nuisances and view with one described
    binary attribute flipped (one the frame shows either way), and both captions name that attribute, worded alike
    otherwise. A batch then holds pairs that only that attribute tells apart, so the contrastive loss cannot match
    captions by the colours alone: the hat, the bags, the hair and the sleeves must be encoded too.
    """

    image_size: int = 64
    data_seed: int = 0
    split_id: int = PRETRAIN_SPLIT
    nuisance_max: float = 2.0
    wide: bool = True
    twins: bool = False

    def __post_init__(self):
        if not isinstance(self.split_id, int) or self.split_id < MIN_SPLIT_ID:
            raise CaptionError(f"PairConfig.split_id must be an int >= {MIN_SPLIT_ID} (PAR uses 0-2), "
                               f"got {self.split_id!r}")
        if self.image_size < 16 or self.nuisance_max < 0 or self.data_seed < 0:
            raise CaptionError(f"PairConfig: need image_size >= 16, nuisance_max >= 0, data_seed >= 0, got "
                               f"{self.image_size}, {self.nuisance_max}, {self.data_seed}")


@dataclass(frozen=True)
class Pair:
    """One rendered frame (S, S, 3) uint8, its caption, the attributes drawn and the view transform (or None)."""

    image: np.ndarray
    caption: str
    attrs: dict[str, int]
    view: np.ndarray | None   # (5,): log-scale, log-aspect, shift x, shift y, flip (+-1)


def uniform_attributes(rng: np.random.Generator) -> dict[str, int]:
    """Every class of every MARS group equally likely (binary groups: 1/2), unlike the skewed PAR ``PRIORS``."""
    return {g.name: int(rng.integers(max(g.width, 2))) for g in MARS.groups}


def draw_person(cfg: PairConfig, index: int) -> tuple[Person, np.random.Generator]:
    """Person ``index`` of the configured split and its generator, which goes on to draw frame, caption and view."""
    rng = np.random.default_rng([cfg.data_seed, cfg.split_id, index])
    person = replace(sample_person(rng), attrs=uniform_attributes(rng))  # the PRIORS attributes are discarded
    if cfg.wide:
        person = replace(person, scene=rng.integers(0, 256, (3, 3)))
    return person, rng


def visible_attributes(person: Person, frame: int) -> dict[str, int]:
    """The attributes one frame shows: a bag carried in the other half of the tracklet (``bag_half``) is absent
    from this frame, so its caption must not name it (a caption describes the picture, as CLIP's do)."""
    second = half_of(frame, person.tracklet_length)
    return {**person.attrs, **{bag: 0 for bag in BAG_GROUPS if bag_half(person, bag) != second}}


#: Binary groups a caption names either way ("with / without a hat", "long / short hair", sleeve and bottom length):
#: the attributes a twin pair may differ in.
FLIPPABLE_GROUPS = ("top short", "bottom short", "bottom skirt", "shoulder bag", "backpack", "hand bag", "hat",
                    "long hair", "female")


def flipped_twin(person: Person, frame: int, rng: np.random.Generator) -> tuple[Person, str]:
    """``person`` with one of ``FLIPPABLE_GROUPS`` flipped, drawn by ``rng`` among those whose flip ``frame`` shows
    (a bag carried in the other half of the tracklet would change nothing on the picture)."""
    shown = visible_attributes(person, frame)
    candidates = []
    for group in FLIPPABLE_GROUPS:
        twin = replace(person, attrs={**person.attrs, group: 1 - person.attrs[group]})
        if visible_attributes(twin, frame)[group] != shown[group]:
            candidates.append((twin, group))
    return candidates[int(rng.integers(len(candidates)))]


def render_pair(cfg: PairConfig, index: int) -> Pair:
    """Pair ``index``: one random frame of a fresh person, a caption of its static attributes and a view draw; with
    ``cfg.twins``, an odd index is the previous pair's twin (``PairConfig``)."""
    person, rng = draw_person(cfg, index - index % 2 if cfg.twins else index)
    frame = int(rng.integers(person.tracklet_length))
    scale = float(rng.uniform(0.0, cfg.nuisance_max)) if cfg.wide else 1.0
    words_rng, must_say = rng, frozenset()
    if cfg.twins:  # the twins share the flip, the caption's words (their own stream) and, from ``rng``, the view
        twin, group = flipped_twin(person, frame, np.random.default_rng([cfg.data_seed, cfg.split_id, index // 2, 1]))
        person, must_say = (twin if index % 2 else person), frozenset({group})
        words_rng = np.random.default_rng([cfg.data_seed, cfg.split_id, index // 2, 2])
    image = render_frames(person, [frame], image_size=cfg.image_size, nuisance_scale=scale)[0]
    text = caption(visible_attributes(person, frame), words_rng, must_say=must_say)
    view = None
    if cfg.wide:
        view = np.array([rng.uniform(np.log(0.8), np.log(1.25)), rng.uniform(-0.1, 0.1), *rng.uniform(-0.1, 0.1, 2),
                         rng.choice([-1.0, 1.0])])
    return Pair(image=image, caption=text, attrs=person.attrs, view=view)


def apply_views(images: torch.Tensor, views: np.ndarray) -> torch.Tensor:
    """Random rescale (zoom in = crop, zoom out = border-padded), aspect change, shift and flip of (B, 3, S, S).

    ``views`` (B, 5) as in ``Pair.view``; one ``grid_sample`` for the batch. Flips do not change any described
    attribute (captions never say left / right).
    """
    v = torch.as_tensor(views, dtype=torch.float32)
    sx, sy = torch.exp(v[:, 0] + v[:, 1]) * v[:, 4], torch.exp(v[:, 0])
    theta = torch.zeros(len(v), 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sx, sy, v[:, 2], v[:, 3]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, S, S, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class PairBatches(torch.utils.data.Dataset):
    """Item ``b`` = batch ``b``: CLIP-normalised images (B, 3, S, S) and caption tokens (B, C) of pairs
    ``b * B .. b * B + B - 1``. Batches are keyed by index, so any DataLoader worker count gives the same data."""

    def __init__(self, cfg: PairConfig, *, batch_size: int, num_batches: int, tokenizer):
        if batch_size < 2 or num_batches < 1 or (cfg.twins and batch_size % 2):
            raise CaptionError(f"PairBatches: need batch_size >= 2 (even with twins) and num_batches >= 1, got "
                               f"{batch_size}, {num_batches}")
        self.cfg, self.batch_size, self.num_batches, self.tokenizer = cfg, batch_size, num_batches, tokenizer

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= b < self.num_batches:
            raise IndexError(f"batch {b} out of range [0, {self.num_batches})")
        pairs = [render_pair(self.cfg, b * self.batch_size + j) for j in range(self.batch_size)]
        images = clip_normalize(torch.from_numpy(np.stack([p.image for p in pairs])))  # (B, S, S, 3) -> (B, 3, S, S)
        if self.cfg.wide:
            images = apply_views(images, np.stack([p.view for p in pairs]))
        return images, self.tokenizer([p.caption for p in pairs])
