"""Attribute schemas: groups, per-class phrases, one-hot column order and group boundaries.

A schema is data, not code: MARS-Attribute (14 groups, 43 columns) and DukeMTMC-VID-Attribute (12 groups,
36 columns) follow the column order of the released VTF code (Zhu et al., CVPR-W 2023), which matches the raw
annotations of Chen et al. (PRCV 2019). A *binary* group owns one column (1 = the phrase holds); a multi-class
group owns one column per class and exactly one of them is 1.

The text side of VTF turns every column into a sentence ("split, expand, prompt"): the group/class pair is
split apart, the class word is expanded into plain English (``expansions``), and the result is put into the
group's prompt template. ``AttributeSchema.sentences()`` performs exactly that step.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

#: What an attribute's evidence needs, the axis of the report's "F1 per kind": ``appearance`` shows within one frame
#: in a small area; ``spatial`` is a relation between parts of the body (what is where, which part is above which,
#: proportions), which a model reads by relating patches (attention) or, where the crop fixes the layout, from where
#: in the frame a patch lies; ``temporal`` shows only across frames.
KINDS = ("appearance", "spatial", "temporal")


@dataclass(frozen=True)
class AttributeGroup:
    """One attribute group. ``classes`` are short labels; a binary group has exactly one class; ``kind`` says what
    its evidence needs (``KINDS``)."""

    name: str
    classes: tuple[str, ...]
    template: str
    binary: bool = False
    expansions: dict[str, str] = field(default_factory=dict)
    kind: str = "appearance"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"group {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.binary and len(self.classes) != 1:
            raise ValueError(f"binary group {self.name!r} must have one class, got {len(self.classes)}")
        if not self.binary and len(self.classes) < 2:
            raise ValueError(f"multi-class group {self.name!r} needs at least two classes")

    @property
    def width(self) -> int:
        """Number of one-hot columns the group owns."""
        return len(self.classes)

    def column_names(self) -> list[str]:
        if self.binary:
            return [self.classes[0]]
        return [f"{self.name} {c}" for c in self.classes]

    def sentences(self) -> list[str]:
        return [self.template.format(self.expansions.get(c, c)) for c in self.classes]


@dataclass(frozen=True)
class AttributeSchema:
    """An ordered list of groups; columns are the groups' classes laid end to end."""

    name: str
    groups: tuple[AttributeGroup, ...]

    @property
    def num_columns(self) -> int:
        return sum(g.width for g in self.groups)

    @property
    def boundaries(self) -> list[int]:
        """Start column of every group plus the end, e.g. MARS [0, 1, ..., 9, 15, 20, 29, 39, 43]."""
        starts = [0]
        for group in self.groups:
            starts.append(starts[-1] + group.width)
        return starts

    def group_slices(self) -> list[slice]:
        b = self.boundaries
        return [slice(b[i], b[i + 1]) for i in range(len(self.groups))]

    def column_names(self) -> list[str]:
        return [name for g in self.groups for name in g.column_names()]

    def sentences(self) -> list[str]:
        """One prompt sentence per column, in column order (the text input of VTF)."""
        return [s for g in self.groups for s in g.sentences()]

    def group(self, name: str) -> AttributeGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"schema {self.name!r} has no group {name!r}; groups: {[g.name for g in self.groups]}")

    def group_index(self, name: str) -> int:
        return [g.name for g in self.groups].index(self.group(name).name)

    def groups_of_kind(self, kind: str) -> list[str]:
        """Names of the groups whose evidence is of ``kind`` (schema order; empty when none)."""
        return [g.name for g in self.groups if g.kind == kind]


_PERSON = "a photo of a pedestrian {}"
_POSE = ("frontal", "lateral-frontal", "lateral", "lateral-back", "back", "varies")
_POSE_WORDS = {
    "frontal": "seen from the front", "lateral-frontal": "seen from the front side", "lateral": "seen from the side",
    "lateral-back": "seen from the back side", "back": "seen from the back", "varies": "whose pose varies",
}
_MOTION = ("walking", "running", "riding", "staying", "varies")
_MOTION_WORDS = {"walking": "who is walking", "running": "who is running", "riding": "who is riding",
                 "staying": "who is standing still", "varies": "whose motion varies"}


def _binary(name: str, words: str, kind: str = "appearance") -> AttributeGroup:
    return AttributeGroup(name=name, classes=(name,), template=_PERSON, binary=True, expansions={name: words},
                          kind=kind)


def _colour(part: str, colours: tuple[str, ...]) -> AttributeGroup:
    """Top or bottom colour: spatial, because which garment a colour belongs to is where it is on the body."""
    words = {c: f"whose {part} is {'of complex colours' if c == 'complex' else c}" for c in colours}
    return AttributeGroup(name=f"{part} colour", classes=colours, template=_PERSON, expansions=words, kind="spatial")


MARS = AttributeSchema(
    name="mars",
    groups=(
        _binary("top short", "wearing a short-sleeved top"),
        _binary("bottom short", "wearing short trousers"),
        _binary("shoulder bag", "carrying a shoulder bag", "spatial"),
        _binary("backpack", "carrying a backpack", "spatial"),
        _binary("hat", "wearing a hat"),
        _binary("hand bag", "carrying a hand bag", "spatial"),
        _binary("long hair", "with long hair"),
        _binary("female", "who is a woman", "spatial"),
        _binary("bottom skirt", "wearing a skirt"),
        AttributeGroup("pose", _POSE, _PERSON, expansions=_POSE_WORDS),
        AttributeGroup("motion", _MOTION, _PERSON, expansions=_MOTION_WORDS, kind="temporal"),
        _colour("top", ("black", "purple", "green", "blue", "gray", "white", "yellow", "red", "complex")),
        _colour("bottom", ("white", "purple", "black", "green", "gray", "pink", "yellow", "blue", "brown", "complex")),
        AttributeGroup("age", ("young", "teenager", "adult", "old"), _PERSON, kind="spatial",
                       expansions={"young": "who is a child", "teenager": "who is a teenager",
                                   "adult": "who is an adult", "old": "who is old"}),
    ),
)

DUKE = AttributeSchema(
    name="duke",
    groups=(
        _binary("backpack", "carrying a backpack", "spatial"),
        _binary("shoulder bag", "carrying a shoulder bag", "spatial"),
        _binary("hand bag", "carrying a hand bag", "spatial"),
        _binary("boots", "wearing boots"),
        _binary("female", "who is a woman", "spatial"),
        _binary("hat", "wearing a hat"),
        _binary("light shoes", "wearing light-coloured shoes"),
        _binary("top long", "wearing a long top"),
        AttributeGroup("pose", _POSE, _PERSON, expansions=_POSE_WORDS),
        AttributeGroup("motion", _MOTION, _PERSON, expansions=_MOTION_WORDS, kind="temporal"),
        _colour("top", ("black", "white", "red", "purple", "gray", "blue", "green", "brown", "complex")),
        _colour("bottom", ("black", "white", "red", "grey", "blue", "green", "brown", "complex")),
    ),
)



def with_kinds(schema: AttributeSchema, name: str, kinds: dict[str, str]) -> AttributeSchema:
    """The same columns, sentences and order under another name, with some groups' kinds changed: what evidence a
    group needs is a property of the data, not of the column."""
    return replace(schema, name=name, groups=tuple(replace(g, kind=kinds.get(g.name, g.kind)) for g in schema.groups))


#: The embedded default: MARS's columns, drawn by data/synthetic.py, where both bags show in one half of the
#: tracklet only (carried on the side turned away from the camera in the other), so their evidence is temporal.
SYNTHETIC = with_kinds(MARS, "synthetic", {"shoulder bag": "temporal", "hand bag": "temporal"})

SCHEMAS = {"mars": MARS, "duke": DUKE, "synthetic": SYNTHETIC}


def get_schema(name: str) -> AttributeSchema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown dataset schema {name!r}; expected one of {sorted(SCHEMAS)}") from None
