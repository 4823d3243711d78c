"""Render one synthetic scene: background, clutter, class objects, occluders, and its annotations.

Boxes are the VISIBLE extent of each object: every drawn layer writes its id into a per-pixel
id map (occluders write 0), and an object's bbox, area and segmentation come from the pixels that
still carry its id at the end, so they are clipped to the image and shrink where something covers
the object. Placement is retried (then the object is skipped) whenever a new layer would leave an
annotated object with less than ``Difficulty.min_visible`` of its full (unclipped) pixel count, so
every annotation shows most of its object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ssd_data.synthetic.draw import (
    SHAPE_NAMES,
    background,
    blob_polygon,
    clutter_colour,
    draw_lines,
    rle_counts,
    rle_string,
    shape_mask,
    texture,
)
from ssd_data.synthetic.presets import TEXTURES, Difficulty

#: (width, height) of COCO-like images and their weights (COCO 2017 is mostly 640 on the long side).
IMAGE_SIZES: tuple[tuple[tuple[int, int], float], ...] = (
    ((640, 480), 0.30),
    ((480, 640), 0.10),
    ((640, 427), 0.18),
    ((427, 640), 0.07),
    ((640, 426), 0.06),
    ((640, 424), 0.05),
    ((640, 428), 0.03),
    ((640, 360), 0.05),
    ((500, 375), 0.04),
    ((375, 500), 0.02),
    ((640, 512), 0.03),
    ((612, 612), 0.04),
    ((640, 640), 0.03),
)
_SIZE_P = np.array([p for _, p in IMAGE_SIZES]) / sum(p for _, p in IMAGE_SIZES)
_PLACEMENT_TRIES = 8
_MIN_SIDE = 6  # px: smallest drawn object side


@dataclass
class _Layer:
    """One annotated thing in the id map (an object, or a crowd group)."""

    category_id: int
    iscrowd: int
    full_area: int  # pixels of the whole drawn shape(s), including parts outside the image
    visible: int  # pixels that currently carry this layer's id
    rect: tuple[int, int, int, int]  # in-image x0, y0, x1, y1 (exclusive) the layer can touch


@dataclass
class _Scene:
    width: int
    height: int
    rgb: np.ndarray  # uint8[H, W, 3]
    ids: np.ndarray  # int16[H, W], 0 = no annotated layer
    layers: list[_Layer] = field(default_factory=list)

    def try_paint(
        self,
        x0: int,
        y0: int,
        mask: np.ndarray,
        pixels: np.ndarray | None,
        layer: _Layer | None,
        min_visible: float,
    ) -> bool:
        """Paint ``mask`` (bool[h, w]) at (x0, y0) with ``pixels`` (uint8[h, w, 3]) if no
        annotated layer (nor the new one) would drop below ``min_visible``; ``layer`` None paints an
        occluder (id 0). Returns whether it painted."""
        h, w = mask.shape
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + w, self.width), min(y0 + h, self.height)
        if ix1 <= ix0 or iy1 <= iy0:
            return False
        local = mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        inside = int(local.sum())
        if layer is not None and inside < min_visible * layer.full_area:
            return False
        covered = self.ids[iy0:iy1, ix0:ix1][local]
        lost = np.bincount(covered, minlength=len(self.layers) + 1)
        for j, old in enumerate(self.layers, start=1):
            if lost[j] and old.visible - lost[j] < min_visible * old.full_area:
                return False
        for j, old in enumerate(self.layers, start=1):
            old.visible -= int(lost[j])
        new_id = 0
        if layer is not None:
            layer.visible = inside
            layer.rect = (ix0, iy0, ix1, iy1)
            self.layers.append(layer)
            new_id = len(self.layers)
        self.ids[iy0:iy1, ix0:ix1][local] = new_id
        if pixels is not None:
            region = self.rgb[iy0:iy1, ix0:ix1]
            region[local] = pixels[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0][local]
        return True


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _object_size(
    rng: np.random.Generator, width: int, height: int, d: Difficulty
) -> tuple[int, int]:
    side = _log_uniform(rng, *d.object_scale) * math.sqrt(width * height)
    aspect = _log_uniform(rng, 1.0 / d.max_aspect, d.max_aspect)
    bw = min(max(_MIN_SIDE, round(side * math.sqrt(aspect))), width)
    bh = min(max(_MIN_SIDE, round(side / math.sqrt(aspect))), height)
    return bw, bh


def _appearance(
    k: int, d: Difficulty, rng: np.random.Generator
) -> tuple[str, str, tuple[int, int, int]]:
    """(shape, texture, jittered colour) of contiguous class index ``k`` of ``d.category_ids``."""
    shape = SHAPE_NAMES[k % d.num_shapes]
    tex = TEXTURES[(k // d.num_shapes) % d.num_textures]
    base = np.array(d.palette[k % len(d.palette)])
    jit = rng.integers(-d.colour_jitter, d.colour_jitter + 1, size=3)
    c = np.clip(base + jit, 0, 255)
    return shape, tex, (int(c[0]), int(c[1]), int(c[2]))


def _place_object(scene: _Scene, k: int, d: Difficulty, rng: np.random.Generator) -> None:
    shape, tex, colour = _appearance(k, d, rng)
    for _ in range(_PLACEMENT_TRIES):
        bw, bh = _object_size(rng, scene.width, scene.height, d)
        mask = shape_mask(shape, bw, bh)
        # Up to ~30 % of the box may hang outside the image (truncated objects, as in COCO).
        x0 = int(rng.integers(-int(0.3 * bw), scene.width - int(0.7 * bw) + 1))
        y0 = int(rng.integers(-int(0.3 * bh), scene.height - int(0.7 * bh) + 1))
        layer = _Layer(d.category_ids[k], 0, int(mask.sum()), 0, (0, 0, 0, 0))
        if scene.try_paint(x0, y0, mask, texture(tex, bw, bh, colour, rng), layer, d.min_visible):
            return


def _place_crowd(scene: _Scene, k: int, d: Difficulty, rng: np.random.Generator) -> None:
    """A COCO-style crowd: 6-15 tiny copies of class ``k`` in one cluster, one iscrowd=1 layer."""
    shape, tex, colour = _appearance(k, d, rng)
    s = math.sqrt(scene.width * scene.height)
    cw, ch = int(s * rng.uniform(0.15, 0.3)), int(s * rng.uniform(0.1, 0.2))
    cx0 = int(rng.integers(0, max(1, scene.width - cw)))
    cy0 = int(rng.integers(0, max(1, scene.height - ch)))
    mask = np.zeros((ch, cw), dtype=bool)
    for _ in range(int(rng.integers(6, 16))):
        side = max(_MIN_SIDE, int(s * rng.uniform(0.02, 0.045)))
        mx, my = int(rng.integers(0, max(1, cw - side))), int(rng.integers(0, max(1, ch - side)))
        mask[my : my + side, mx : mx + side] |= shape_mask(shape, side, side)[: ch - my, : cw - mx]
    layer = _Layer(d.category_ids[k], 1, int(mask.sum()), 0, (0, 0, 0, 0))
    scene.try_paint(cx0, cy0, mask, texture(tex, cw, ch, colour, rng), layer, d.min_visible)


def _place_occluder(scene: _Scene, d: Difficulty, rng: np.random.Generator) -> None:
    s = math.sqrt(scene.width * scene.height)
    for _ in range(_PLACEMENT_TRIES):
        r = s * rng.uniform(0.03, 0.12)
        box = int(2 * r) + 1
        img = Image.new("L", (box, box), 0)
        ImageDraw.Draw(img).polygon(blob_polygon(r, r, r, rng), fill=255)
        mask = np.asarray(img) > 127
        pixels = np.empty((box, box, 3), dtype=np.uint8)
        pixels[...] = clutter_colour(rng, 0.5)
        x0 = int(rng.integers(-box // 2, scene.width - box // 2))
        y0 = int(rng.integers(-box // 2, scene.height - box // 2))
        if scene.try_paint(x0, y0, mask, pixels, None, d.min_visible):
            return


def _draw_background(
    width: int, height: int, d: Difficulty, rng: np.random.Generator
) -> np.ndarray:
    img = background(width, height, d.background_contrast, rng)
    draw = ImageDraw.Draw(img)
    s = math.sqrt(width * height)
    for _ in range(int(rng.integers(d.distractors[0], d.distractors[1] + 1))):
        r = s * rng.uniform(0.03, 0.15)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        draw.polygon(blob_polygon(cx, cy, r, rng), fill=clutter_colour(rng, 0.6))
    draw_lines(img, int(rng.integers(d.lines[0], d.lines[1] + 1)), rng)
    return np.array(img)


def _annotation(scene: _Scene, j: int, layer: _Layer, image_id: int) -> dict[str, Any]:
    x0, y0, x1, y1 = layer.rect
    local = scene.ids[y0:y1, x0:x1] == j
    ys, xs = np.nonzero(local)
    full = np.zeros((scene.height, scene.width), dtype=bool)
    full[y0:y1, x0:x1] = local
    counts = rle_counts(full)
    size = [scene.height, scene.width]
    return {
        "id": image_id * 1000 + j,
        "image_id": image_id,
        "category_id": layer.category_id,
        # COCO's conventions: crowds carry uncompressed RLE, single objects here carry
        # compressed RLE of exactly the visible pixels (so area == mask area == pixel count).
        "segmentation": {"size": size, "counts": counts if layer.iscrowd else rle_string(counts)},
        "area": float(len(xs)),
        "bbox": [
            float(x0 + xs.min()),
            float(y0 + ys.min()),
            float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1),
        ],
        "iscrowd": layer.iscrowd,
    }


def render_image(
    path: Path, image_id: int, d: Difficulty, rng: np.random.Generator
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Draw one scene with ``rng``, save it as a JPEG at ``path``, return (image, annotations) records.

    The image record is COCO's ``{"id", "file_name", "width", "height", ...}``; annotations are
    COCO ``{"bbox": [x, y, w, h] pixels, "area", "segmentation", "iscrowd", ...}`` records.
    """
    (width, height) = IMAGE_SIZES[int(rng.choice(len(IMAGE_SIZES), p=_SIZE_P))][0]
    grayscale = rng.random() < d.grayscale_fraction
    empty = rng.random() < d.empty_fraction
    crowd = not empty and rng.random() < d.crowd_fraction
    scene = _Scene(
        width, height, _draw_background(width, height, d, rng), np.zeros((height, width), np.int16)
    )
    if not empty:
        n_classes = len(d.category_ids)
        if crowd:
            _place_crowd(scene, int(rng.integers(n_classes)), d, rng)
        for _ in range(int(rng.integers(d.objects_per_image[0], d.objects_per_image[1] + 1))):
            _place_object(scene, int(rng.integers(n_classes)), d, rng)
        for _ in range(int(rng.integers(d.occluders[0], d.occluders[1] + 1))):
            _place_occluder(scene, d, rng)
    img = Image.fromarray(scene.rgb, "RGB")
    if grayscale:
        img = img.convert("L")
    img.save(path, "JPEG", quality=d.jpeg_quality)
    anns = [
        _annotation(scene, j, layer, image_id)
        for j, layer in enumerate(scene.layers, start=1)
        if layer.visible > 0
    ]
    record = {
        "license": 1,
        "file_name": path.name,
        "coco_url": "",
        "height": height,
        "width": width,
        "date_captured": "2017-01-01 00:00:00",
        "flickr_url": "",
        "id": image_id,
    }
    return record, anns
