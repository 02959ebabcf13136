"""Point labels that do not overlap: each label takes the least crowded spot near its marker.

Scatter plots of 14+ strategies put several markers within a label's width of each other (the Pareto plot of the
default run has seven within 10 MiB and 1 F1 point), so a fixed offset makes labels collide. Here, in pixel space
of the laid-out figure, every label considers positions on rings of growing radius around its point (right, left,
above, below, then the diagonals) and takes the one of least cost: overlap with labels placed before it, with
markers, lines and the legend, leaving the axes, sitting nearer to another marker than to its own, a leader line
through another marker, and distance. Labels away from their marker get a thin leader line. Crowded points are
placed first, while there is still room near them. Deterministic: the same points give the same figure bytes.
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection

DIRECTIONS = (0, 180, 90, 270, 30, 150, 330, 210, 60, 120, 300, 240)  # degrees, in order of preference
RING_STEPS = (1.0, 1.8, 2.8, 4.0, 5.5, 7.5, 10.0, 13.0)  # ring radius, in label heights beyond the marker's edge
GAP_PX = 3.0
LEADER_BEYOND_PX = 12.0  # a label farther than this from its marker's edge gets a leader line
AMBIGUITY_COST = 150.0  # square pixels: a label nearer to another marker counts like this much overlap
CROSSING_COST = 400.0  # square pixels: a leader line through another marker
NEIGHBOUR_PX = 24.0  # another marker closer than this to a label (and closer than its own) makes it ambiguous


def place_labels(ax: Axes, points: list[tuple[float, float]], texts: list[str], *, radii_px: list[float],
                 fontsize: float = 8) -> list:
    """Annotate ``points`` (data coordinates) with ``texts``; the figure must already be laid out (drawn once,
    layout engine off). Returns the annotations in input order."""
    renderer = ax.figure.canvas.get_renderer()
    centres = ax.transData.transform(np.asarray(points, dtype="float64"))  # (P, 2) display pixels
    radii = np.asarray(radii_px, dtype="float64")
    sizes = [_text_size(ax, text, fontsize, renderer) for text in texts]
    obstacles = np.vstack([_squares(centres, radii), *_legend_boxes(ax, renderer), *_line_boxes(ax)])  # (O, 4)
    extent = ax.get_window_extent(renderer)
    frame = np.array([extent.x0, extent.y0, extent.x1, extent.y1])
    placed, leaders = np.zeros((0, 4)), np.zeros((0, 4))  # label boxes; small boxes along leader lines
    boxes: dict[int, np.ndarray] = {}
    for i in _crowded_first(centres):
        others = np.arange(len(centres)) != i
        boxes[i] = _best_box(centres[i], radii[i], sizes[i], taken=placed, obstacles=np.vstack([obstacles, leaders]),
                             frame=frame, other_centres=centres[others], other_radii=radii[others])
        placed = np.vstack([placed, boxes[i]])
        if _gaps(boxes[i], centres[i][None, :], radii[i:i + 1])[0] > LEADER_BEYOND_PX:
            leaders = np.vstack([leaders, _segment_boxes(_nearest_point(boxes[i], centres[i]), centres[i])])
    return [_annotate(ax, points[i], texts[i], boxes[i], centres[i], radii[i], fontsize) for i in range(len(texts))]


def _text_size(ax: Axes, text: str, fontsize: float, renderer) -> tuple[float, float]:
    probe = ax.text(0, 0, text, fontsize=fontsize)
    box = probe.get_window_extent(renderer)
    probe.remove()
    return box.width + 2, box.height + 2


def _squares(centres: np.ndarray, radii) -> np.ndarray:
    """(N, 4) boxes x0, y0, x1, y1 around (N, 2) centres."""
    radii = np.broadcast_to(np.asarray(radii, dtype="float64"), (len(centres),))[:, None]
    return np.hstack([centres - radii, centres + radii])


def _legend_boxes(ax: Axes, renderer) -> list[np.ndarray]:
    legend = ax.get_legend()
    if legend is None:
        return []
    box = legend.get_window_extent(renderer)
    return [np.array([[box.x0, box.y0, box.x1, box.y1]])]


def _polylines(ax: Axes):
    """Every drawn line in display pixels: plotted lines (steps included; marker-only lines such as error bar caps
    have no segments) and the segments of line collections (error bars)."""
    for line in ax.get_lines():
        if line.get_linestyle() not in ("None", "", " "):
            yield line.get_transform().transform_path(line.get_path()).vertices
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            yield from (collection.get_transform().transform(segment) for segment in collection.get_segments())


def _line_boxes(ax: Axes, spacing_px: float = 6.0, half_width_px: float = 2.0) -> list[np.ndarray]:
    """Small boxes along every drawn line, so labels keep off it."""
    boxes = []
    for vertices in _polylines(ax):
        for start, end in zip(vertices[:-1], vertices[1:], strict=True):
            count = max(int(math.dist(start, end) / spacing_px), 1)
            steps = np.linspace(0.0, 1.0, count + 1)[:, None]
            boxes.append(_squares(start + steps * (end - start), half_width_px))
    return boxes


def _segment_boxes(a: np.ndarray, b: np.ndarray, spacing_px: float = 4.0, half_width_px: float = 1.5) -> np.ndarray:
    steps = np.linspace(0.0, 1.0, max(int(math.dist(a, b) / spacing_px), 1) + 1)[:, None]
    return _squares(a + steps * (b - a), half_width_px)


def _crowded_first(centres: np.ndarray) -> list[int]:
    """Points with the most neighbours within 80 px first; ties in input order."""
    distances = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    neighbours = (distances < 80).sum(axis=1)
    return sorted(range(len(centres)), key=lambda i: (-neighbours[i], i))


def _candidates(centre: np.ndarray, radius: float, size: tuple[float, float]):
    """(label box, its ring's distance from the marker's edge) around a marker, nearest ring first, preferred
    direction first within a ring."""
    width, height = size
    for step in RING_STEPS:
        distance = GAP_PX + (step - 1.0) * height
        for angle in DIRECTIONS:
            dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            cx = centre[0] + dx * (radius + distance + width / 2)
            cy = centre[1] + dy * (radius + distance + height / 2)
            yield np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2]), distance


def _overlap(box: np.ndarray, others: np.ndarray) -> float:
    """Total area shared by ``box`` (4,) with each of ``others`` (N, 4)."""
    if not len(others):
        return 0.0
    width = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    height = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    return float((np.clip(width, 0, None) * np.clip(height, 0, None)).sum())


def _overlap_each(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N,) whether each of ``boxes`` touches any of ``others``."""
    if not len(others) or not len(boxes):
        return np.zeros(len(boxes), dtype=bool)
    width = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
    height = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
    return ((width > 0) & (height > 0)).any(axis=1)


def _nearest_point(box: np.ndarray, point: np.ndarray) -> np.ndarray:
    return np.clip(point, box[:2], box[2:])


def _gaps(box: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Pixels between a label box and the edge of each marker."""
    nearest = np.clip(centres, box[:2], box[2:])
    return np.linalg.norm(nearest - centres, axis=-1) - radii


def _segment_hits(a: np.ndarray, b: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> int:
    """How many marker discs the segment a-b passes through."""
    ab = b - a
    t = np.clip(((centres - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)[:, None]
    return int((np.linalg.norm(a + t * ab - centres, axis=-1) < radii).sum())


def _cost(box: np.ndarray, distance: float, centre: np.ndarray, radius: float, *, taken: np.ndarray,
          obstacles: np.ndarray, frame: np.ndarray, other_centres: np.ndarray, other_radii: np.ndarray) -> float:
    """Square pixels of overlap (labels weigh 3x, leaving the axes 10x; other labels' leader lines count as
    obstacles), plus fixed costs for a label close to and nearer to another marker, a leader line through another
    marker or through a placed label, plus one per pixel of ring distance."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    cost = 10 * (area - _overlap(box, frame[None, :])) + 3 * _overlap(box, taken) + _overlap(box, obstacles)
    own = float(_gaps(box, centre[None, :], np.array([radius]))[0])
    others = _gaps(box, other_centres, other_radii)
    cost += AMBIGUITY_COST * bool(((others < own) & (others < NEIGHBOUR_PX)).any())
    if own > LEADER_BEYOND_PX:
        start = _nearest_point(box, centre)
        cost += CROSSING_COST * _segment_hits(start, centre, other_centres, other_radii)
        cost += CROSSING_COST * bool(_overlap_each(_segment_boxes(start, centre), taken).any())
    return cost + distance


def _best_box(centre: np.ndarray, radius: float, size, **context) -> np.ndarray:
    """The candidate of least cost; the first one among equals (nearest ring, preferred direction)."""
    return min(_candidates(centre, radius, size), key=lambda c: _cost(*c, centre, radius, **context))[0]


def _annotate(ax: Axes, point, text: str, box: np.ndarray, centre: np.ndarray, radius: float, fontsize: float):
    label_xy = ax.transData.inverted().transform(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    far = float(_gaps(box, centre[None, :], np.array([radius]))[0]) > LEADER_BEYOND_PX
    arrow = dict(arrowstyle="-", color="0.45", linewidth=0.6, shrinkA=0, shrinkB=radius * 72 / ax.figure.dpi) \
        if far else None
    return ax.annotate(text, xy=point, xytext=label_xy, ha="center", va="center", fontsize=fontsize,
                       arrowprops=arrow, zorder=4, bbox=dict(boxstyle="square,pad=0.1", facecolor="white",
                                                            edgecolor="none", alpha=0.75))
