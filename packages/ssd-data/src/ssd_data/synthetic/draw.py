"""Drawing primitives of the synthetic dataset: class shapes, fill textures, backgrounds, clutter.

Everything is drawn with PIL on uint8 RGB images and takes a ``numpy.random.Generator`` so that
one image's pixels depend only on that image's generator (deterministic and parallel-safe).
Shapes are polygons in the unit square (x right, y down) that are stretched to the object's box.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
Polygon = tuple[tuple[float, float], ...]


def _regular(n: int, phase: float = -math.pi / 2) -> Polygon:
    return tuple(
        (
            0.5 + 0.5 * math.cos(phase + 2 * math.pi * i / n),
            0.5 + 0.5 * math.sin(phase + 2 * math.pi * i / n),
        )
        for i in range(n)
    )


def _star(points: int, inner: float) -> Polygon:
    out = []
    for i in range(2 * points):
        r = 0.5 if i % 2 == 0 else 0.5 * inner
        a = -math.pi / 2 + math.pi * i / points
        out.append((0.5 + r * math.cos(a), 0.5 + r * math.sin(a)))
    return tuple(out)


def _heart() -> Polygon:
    pts = []
    for i in range(40):
        t = 2 * math.pi * i / 40
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x, -y))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return tuple(((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)) for x, y in pts)


def _semicircle() -> Polygon:
    return tuple(
        (
            0.5 + 0.5 * math.cos(math.pi + math.pi * i / 24),
            1.0 + math.sin(math.pi + math.pi * i / 24),
        )
        for i in range(25)
    )


#: Class shapes, most distinct first (the easy preset uses the first 10).
SHAPES: dict[str, Polygon] = {
    "ellipse": _regular(40),
    "rectangle": ((0, 0), (1, 0), (1, 1), (0, 1)),
    "triangle": ((0.5, 0), (1, 1), (0, 1)),
    "cross": (
        (1 / 3, 0),
        (2 / 3, 0),
        (2 / 3, 1 / 3),
        (1, 1 / 3),
        (1, 2 / 3),
        (2 / 3, 2 / 3),
        (2 / 3, 1),
        (1 / 3, 1),
        (1 / 3, 2 / 3),
        (0, 2 / 3),
        (0, 1 / 3),
        (1 / 3, 1 / 3),
    ),
    "star": _star(5, 0.42),
    "diamond": ((0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)),
    "arrow": ((0, 0.3), (0.55, 0.3), (0.55, 0), (1, 0.5), (0.55, 1), (0.55, 0.7), (0, 0.7)),
    "semicircle": _semicircle(),
    "tee": ((0, 0), (1, 0), (1, 0.3), (0.65, 0.3), (0.65, 1), (0.35, 1), (0.35, 0.3), (0, 0.3)),
    "hourglass": ((0, 0), (1, 0), (0.62, 0.5), (1, 1), (0, 1), (0.38, 0.5)),
    "hexagon": _regular(6, 0.0),
    "heart": _heart(),
    "ell": ((0, 0), (0.35, 0), (0.35, 0.65), (1, 0.65), (1, 1), (0, 1)),
    "trapezoid": ((0.28, 0), (0.72, 0), (1, 1), (0, 1)),
    "chevron": ((0, 0), (0.5, 0.55), (1, 0), (1, 0.45), (0.5, 1), (0, 0.45)),
    "star8": _star(8, 0.6),
}


def _fit_unit_square(poly: Polygon) -> Polygon:
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return tuple(((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)) for x, y in poly)


# Every shape spans its whole box, so the sampled box size and aspect are the drawn ones.
SHAPES = {name: _fit_unit_square(poly) for name, poly in SHAPES.items()}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """bool[height, width] mask of ``shape`` stretched to a width x height box."""
    img = Image.new("L", (width, height), 0)
    pts = [(x * (width - 1), y * (height - 1)) for x, y in SHAPES[shape]]
    ImageDraw.Draw(img).polygon(pts, fill=255)
    return np.asarray(img) > 127


def texture(
    kind: str, width: int, height: int, colour: RGB, rng: np.random.Generator
) -> np.ndarray:
    """uint8[height, width, 3] fill: ``colour`` with a darker second colour in the pattern.

    The pattern period scales with the object (about 1/6 of its smaller side, at least 4 px) so
    that it survives the resize to 300x300; its phase is random.
    """
    base = np.array(colour, dtype=np.float32)
    if kind == "solid":
        # A gentle left-to-right shading keeps solid objects from being perfectly flat.
        shade = np.linspace(1.0, rng.uniform(0.8, 1.0), width, dtype=np.float32)[None, :, None]
        return np.clip(base * shade, 0, 255).astype(np.uint8).repeat(height, axis=0)
    second = np.where(base.mean() > 110, base * 0.35, base * 0.35 + 150)
    period = max(4, min(width, height) // 6)
    yy, xx = np.indices((height, width))
    yy += int(rng.integers(period))
    xx += int(rng.integers(period))
    if kind == "hstripes":
        on = (yy // period) % 2 == 0
    elif kind == "vstripes":
        on = (xx // period) % 2 == 0
    elif kind == "checker":
        on = ((yy // period) + (xx // period)) % 2 == 0
    elif kind == "dots":
        cy, cx = yy % period - period / 2, xx % period - period / 2
        on = cy * cy + cx * cx > (period * 0.3) ** 2
    else:
        raise ValueError(f"unknown texture {kind!r}")
    out = np.where(on[..., None], base, second)
    return out.astype(np.uint8)


def background(width: int, height: int, contrast: float, rng: np.random.Generator) -> Image.Image:
    """A smooth random RGB background: a low-resolution colour field upsampled bicubically."""
    gh, gw = int(rng.integers(2, 7)), int(rng.integers(2, 7))
    mean = rng.uniform(70, 190, size=3)
    grey = rng.uniform(0.5, 1.0)  # pull the channels together: backgrounds are low-saturation
    mean = grey * mean.mean() + (1 - grey) * mean
    field = (
        mean
        + rng.normal(0.0, contrast, size=(gh, gw, 1))
        + rng.normal(0.0, contrast / 3, size=(gh, gw, 3))
    )
    small = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), "RGB")
    return small.resize((width, height), Image.Resampling.BICUBIC)


def blob_polygon(
    cx: float, cy: float, radius: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """An irregular, jagged polygon (never one of the class shapes) around (cx, cy)."""
    n = int(rng.integers(6, 11))
    angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
    radii = radius * rng.uniform(0.35, 1.0, size=n)
    return [
        (cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)
    ]


def clutter_colour(rng: np.random.Generator, desaturate: float) -> RGB:
    """A random colour pulled towards grey by ``desaturate`` in [0, 1]."""
    c = rng.uniform(0, 255, size=3)
    c = desaturate * c.mean() + (1 - desaturate) * c
    return (int(c[0]), int(c[1]), int(c[2]))


def draw_lines(img: Image.Image, count: int, rng: np.random.Generator) -> None:
    """Draw ``count`` random straight lines (1-4 px, muted colours) onto ``img`` in place."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(count):
        x0, x1 = rng.uniform(0, w, size=2)
        y0, y1 = rng.uniform(0, h, size=2)
        draw.line(
            [(x0, y0), (x1, y1)], fill=clutter_colour(rng, 0.6), width=int(rng.integers(1, 5))
        )


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO run-length counts of a bool[H, W] mask (column-major, starting with a 0-run)."""
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return counts


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string of run-length ``counts`` (pycocotools ``rleToString``)."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)
