"""Difficulty presets of the synthetic COCO-format dataset.

A :class:`Difficulty` is the full set of knobs that decide how hard the drawn scenes are: which
COCO categories appear, how a class looks (shape, texture, colour), how many objects an image
holds and how big they are, how much clutter and occlusion there is. Presets:

- ``starter`` (the CPU default job's: mAP 0.23 within 800 image-passes of training from scratch):
  4 categories (ellipse, rectangle, triangle, cross; red, green, blue, yellow), solid fill; 1-3
  objects of 20-50 % of the image side, aspect <= 1.5; a plain low-contrast background without
  clutter; objects stay >= 80 % visible; no empty, grayscale or crowd images.
- ``easy``: 10 categories, each with its own
  shape AND its own clearly separated colour, solid fill; 1-4 objects of 12-55 % of the image
  side; light background clutter; objects stay >= 70 % visible.
- ``medium``: 20 categories = 10 shapes x 2 textures (solid, stripes), 20 colours only 18 degrees
  of hue apart (colour alone does not tell the class); 1-6 objects of 7-50 %; more clutter and
  occluders; objects >= 50 % visible.
- ``hard``: all 80 categories = 16 shapes x 5 textures, 12 colours shared between classes;
  1-10 objects of 3-60 % (COCO-like small objects); heavy clutter; objects >= 35 % visible.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ssd_data.synthetic.categories import COCO_CATEGORIES

RGB = tuple[int, int, int]

#: Fill textures, in the order classes use them.
TEXTURES: tuple[str, ...] = ("solid", "hstripes", "checker", "dots", "vstripes")


def _hue_palette(n: int, saturation: float, value: float, offset: float = 0.0) -> tuple[RGB, ...]:
    """``n`` colours evenly spaced in hue."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((offset + i / n) % 1.0, saturation, value)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(out)


# Ten colours far apart in hue and lightness, robust to the training colour jitter
# (hue +-0.05, saturation/contrast x[0.5, 1.5], brightness x[0.875, 1.125]).
_EASY_PALETTE: tuple[RGB, ...] = (
    (220, 30, 30),  # red
    (30, 170, 50),  # green
    (35, 70, 225),  # blue
    (245, 220, 30),  # yellow
    (210, 40, 200),  # magenta
    (30, 205, 215),  # cyan
    (250, 135, 20),  # orange
    (250, 250, 250),  # white
    (15, 15, 15),  # black
    (110, 60, 20),  # brown
)

# COCO category ids used by each preset (objects are drawn only from these; see ``categories``
# in generate_synthetic_coco for what the json lists).
_EASY_IDS = (1, 3, 16, 18, 44, 62, 73, 85, 53, 28)
_STARTER_IDS = _EASY_IDS[:4]
_MEDIUM_IDS = (*_EASY_IDS, 2, 6, 9, 19, 22, 37, 47, 59, 64, 77)


@dataclass(frozen=True)
class Difficulty:
    """All settings of one difficulty level (sizes are fractions of sqrt(image area)).

    Class k of ``category_ids`` is drawn as shape ``k % num_shapes``, texture
    ``TEXTURES[(k // num_shapes) % num_textures]`` and colour ``palette[k % len(palette)]``;
    (shape, texture) pairs are unique, so the class is determined even in grayscale images.
    """

    name: str
    category_ids: tuple[int, ...]
    num_shapes: int
    num_textures: int
    palette: tuple[RGB, ...]
    colour_jitter: int  # per-instance +- jitter of each RGB channel
    objects_per_image: tuple[int, int]  # inclusive range for images with objects
    object_scale: tuple[float, float]  # sqrt(box area / image area), sampled log-uniformly
    max_aspect: float  # box w/h sampled log-uniformly in [1/max_aspect, max_aspect]
    min_visible: float  # every annotated object keeps at least this share of its pixels
    background_contrast: float  # std of the low-frequency background colour field (0..255)
    distractors: tuple[int, int]  # irregular non-class blobs drawn under the objects
    lines: tuple[int, int]  # random straight lines drawn under the objects
    occluders: tuple[int, int]  # non-class blobs drawn over the objects
    empty_fraction: float  # images without any object
    grayscale_fraction: float  # images saved as single-channel JPEGs
    crowd_fraction: float  # images that also hold one iscrowd=1 group of tiny objects
    jpeg_quality: int = 90
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {cid for cid, _, _ in COCO_CATEGORIES}
        bad = [c for c in self.category_ids if c not in known]
        if bad:
            raise ValueError(f"difficulty {self.name!r}: {bad} are not COCO category ids")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"difficulty {self.name!r}: category_ids repeat")
        if len(self.category_ids) > self.num_shapes * self.num_textures:
            raise ValueError(
                f"difficulty {self.name!r}: {len(self.category_ids)} classes need more than "
                f"{self.num_shapes} shapes x {self.num_textures} textures to look distinct"
            )
        lo, hi = self.objects_per_image
        if not 1 <= lo <= hi:
            raise ValueError(f"difficulty {self.name!r}: objects_per_image must be 1 <= lo <= hi")
        slo, shi = self.object_scale
        if not 0.0 < slo <= shi <= 1.0:
            raise ValueError(f"difficulty {self.name!r}: object_scale must be 0 < lo <= hi <= 1")
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError(f"difficulty {self.name!r}: min_visible must be in (0, 1]")

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (lists instead of tuples), used for the cache marker."""
        return json.loads(json.dumps(asdict(self)))


PRESETS: dict[str, Difficulty] = {
    "starter": Difficulty(
        name="starter",
        category_ids=_STARTER_IDS,
        num_shapes=4,
        num_textures=1,
        palette=_EASY_PALETTE[:4],
        colour_jitter=8,
        objects_per_image=(1, 3),
        object_scale=(0.2, 0.5),
        max_aspect=1.5,
        min_visible=0.8,
        background_contrast=15.0,
        distractors=(0, 0),
        lines=(0, 0),
        occluders=(0, 0),
        empty_fraction=0.0,
        grayscale_fraction=0.0,
        crowd_fraction=0.0,
    ),
    "easy": Difficulty(
        name="easy",
        category_ids=_EASY_IDS,
        num_shapes=10,
        num_textures=1,
        palette=_EASY_PALETTE,
        colour_jitter=12,
        objects_per_image=(1, 4),
        object_scale=(0.12, 0.55),
        max_aspect=2.0,
        min_visible=0.7,
        background_contrast=25.0,
        distractors=(0, 3),
        lines=(0, 4),
        occluders=(0, 0),
        empty_fraction=0.02,
        grayscale_fraction=0.03,
        crowd_fraction=0.02,
    ),
    "medium": Difficulty(
        name="medium",
        category_ids=_MEDIUM_IDS,
        num_shapes=10,
        num_textures=2,
        palette=_hue_palette(20, 0.75, 0.85),
        colour_jitter=25,
        objects_per_image=(1, 6),
        object_scale=(0.07, 0.5),
        max_aspect=2.5,
        min_visible=0.5,
        background_contrast=40.0,
        distractors=(1, 6),
        lines=(1, 8),
        occluders=(0, 2),
        empty_fraction=0.02,
        grayscale_fraction=0.04,
        crowd_fraction=0.03,
    ),
    "hard": Difficulty(
        name="hard",
        category_ids=tuple(cid for cid, _, _ in COCO_CATEGORIES),
        num_shapes=16,
        num_textures=5,
        palette=_hue_palette(12, 0.7, 0.8, offset=0.02),
        colour_jitter=35,
        objects_per_image=(1, 10),
        object_scale=(0.03, 0.6),
        max_aspect=3.0,
        min_visible=0.35,
        background_contrast=55.0,
        distractors=(3, 10),
        lines=(2, 12),
        occluders=(0, 4),
        empty_fraction=0.01,
        grayscale_fraction=0.05,
        crowd_fraction=0.05,
    ),
}


def resolve_difficulty(difficulty: str | Difficulty) -> Difficulty:
    """A preset by name, or the given :class:`Difficulty` unchanged."""
    if isinstance(difficulty, Difficulty):
        return difficulty
    try:
        return PRESETS[difficulty]
    except KeyError:
        raise ValueError(
            f"unknown synthetic difficulty {difficulty!r}; choose one of {sorted(PRESETS)}"
        ) from None
