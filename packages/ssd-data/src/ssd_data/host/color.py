"""Colour jitter of the MLPerf reference: ColorJitter(brightness=0.125, contrast=0.5,
saturation=0.5, hue=0.05), the four adjustments applied in a random order.

Two implementations share the parameters drawn by :func:`ssd_data.samples.jitter.sample_jitter`:

- :func:`jitter_reference` applies torchvision's functional ops to a PIL image one after the
  other (``adjust_brightness`` / ``_contrast`` / ``_saturation`` / ``_hue``), exactly what the
  reference's ``ColorJitter`` does for these parameters (rounding to uint8 after each op; hue as
  a shift of PIL's 8-bit HSV hue channel).
- :func:`jitter_fused` composes the four adjustments into ONE affine colour map
  ``y = A x + t`` applied in one pass by PIL's colour-matrix conversion (~5x faster).
  Brightness, contrast and saturation are the same linear maps as torchvision's (contrast
  blends with the mean luminance of the image as it is at that point of the chain, computed
  from the mean colour). Differences from the reference: values are clamped and rounded
  once at the end instead of after each op, and the hue shift is a rotation of the colour
  vector about the grey axis by ``hue * 360`` degrees (the linear analogue of the HSV hue shift:
  same direction, red -> yellow -> green for positive hue; it keeps the mean of R, G, B where
  the HSV shift keeps max and min). tests/data/test_augment_color.py bounds the difference.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageStat
from torchvision.transforms import functional as F

from ssd_data.samples.jitter import BRIGHTNESS, CONTRAST, LUMA, SATURATION, JitterParams


def jitter_reference(image: Image.Image, p: JitterParams) -> Image.Image:
    """Apply ``p`` to an RGB PIL image with torchvision's functional ops, in ``p.order``."""
    for op in p.order:
        if op == BRIGHTNESS:
            image = F.adjust_brightness(image, p.brightness)
        elif op == CONTRAST:
            image = F.adjust_contrast(image, p.contrast)
        elif op == SATURATION:
            image = F.adjust_saturation(image, p.saturation)
        else:
            image = F.adjust_hue(image, p.hue)
    return image


def hue_rotation(hue: float) -> np.ndarray:
    """float64[3, 3] rotation of RGB vectors about the grey axis by ``hue`` turns (R -> G -> B)."""
    theta = 2 * math.pi * hue
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return (
        math.cos(theta) * np.eye(3)
        + math.sin(theta) * cross
        + (1 - math.cos(theta)) * np.outer(k, k)
    )


def affine_map(p: JitterParams, mean_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compose ``p`` into (A float64[3, 3], t float64[3]) with y = A x + t for RGB in 0..255.

    ``mean_rgb`` float[3] is the image's mean colour before jitter (needed for contrast).
    """
    a = np.eye(3)
    t = np.zeros(3)
    grey = np.outer(np.ones(3), LUMA)  # x -> luma(x) in each channel
    for op in p.order:
        if op == BRIGHTNESS:
            m = p.brightness * np.eye(3)
            a, t = m @ a, m @ t
        elif op == CONTRAST:
            mean_luma = float(LUMA @ (a @ mean_rgb + t))
            a = p.contrast * a
            t = p.contrast * t + (1 - p.contrast) * mean_luma
        elif op == SATURATION:
            m = p.saturation * np.eye(3) + (1 - p.saturation) * grey
            a, t = m @ a, m @ t
        else:
            m = hue_rotation(p.hue)
            a, t = m @ a, m @ t
    return a, t


def jitter_fused(image: Image.Image, p: JitterParams) -> Image.Image:
    """Apply ``p`` to an RGB PIL image in one pass (PIL's C colour-matrix conversion).

    The mean colour for the contrast step comes from a 4x4 box-reduced copy (exact up to the
    reduced copy's rounding, < 0.5 grey levels).
    """
    mean_rgb = np.array(ImageStat.Stat(image.reduce(4) if min(image.size) >= 8 else image).mean)
    a, t = affine_map(p, mean_rgb)
    matrix = np.concatenate([a, t[:, None]], axis=1).ravel()
    return image.convert("RGB", matrix=tuple(float(v) for v in matrix))
