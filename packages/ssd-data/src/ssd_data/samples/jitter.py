"""Colour-jitter decisions of the MLPerf reference: ColorJitter(brightness=0.125, contrast=0.5,
saturation=0.5, hue=0.05), the four factors and their random order drawn like torchvision's
``ColorJitter.get_params``. Shared by both input paths; the pixel work is in
:mod:`ssd_data.host.color` (PIL) and :mod:`ssd_data.device.color` (tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ITU-R 601 luma weights used by PIL's "L" conversion and torchvision's rgb_to_grayscale.
LUMA = np.array([0.299, 0.587, 0.114])
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


@dataclass(frozen=True)
class JitterParams:
    """Factors of one colour jitter: brightness in [0.875, 1.125], contrast and saturation in
    [0.5, 1.5], hue in [-hue, hue] (fraction of the colour circle), ``order`` a permutation of
    (BRIGHTNESS, CONTRAST, SATURATION, HUE)."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, ...]


def sample_jitter(
    rng: np.random.Generator,
    brightness: float = 0.125,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.05,
) -> JitterParams:
    """Draw jitter factors like torchvision's ColorJitter.get_params (uniform ranges, random order)."""
    order = tuple(int(i) for i in rng.permutation(4))
    return JitterParams(
        brightness=float(rng.uniform(1 - brightness, 1 + brightness)),
        contrast=float(rng.uniform(1 - contrast, 1 + contrast)),
        saturation=float(rng.uniform(1 - saturation, 1 + saturation)),
        hue=float(rng.uniform(-hue, hue)),
        order=order,
    )
