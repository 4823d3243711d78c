"""Per-image transforms: the MLPerf training augmentation and the evaluation resize.

Training (mlperf-ssd-v0.7.md 3.2, in the reference's order): SSD random crop
(:mod:`ssd_data.samples.crop`), horizontal flip with p = 0.5, resize to 300x300 ignoring the aspect
ratio (PIL bilinear, as torchvision's Resize does on PIL images), colour jitter
(:mod:`ssd_data.host.color`). Evaluation: resize to 300x300 only. Both return uint8 RGB in HWC
layout (the batch becomes a channels_last [N, 3, 300, 300] view; ImageNet normalisation happens
on the device, interfaces.md).

All random numbers come from the ``numpy.random.Generator`` passed in, drawn in a fixed order
(crop, flip, jitter), so one seed gives one result whatever thread or process runs it. The crop
and flip are decided on the normalised boxes before the image is decoded.

``impl="fast"`` (default) differs from ``impl="reference"`` only in (a) the fused colour jitter
(:func:`ssd_data.host.color.jitter_fused`: one PIL colour-matrix pass instead of four PIL/torchvision
ops, mean absolute difference of a few grey levels, see tests/data/test_augment_color.py) and
(b) JPEG draft mode (DCT-domain 1/2, 1/4, 1/8 downscaling while decoding) for images at least
twice as large as the crop needs: for COCO's <= 640 pixel images only when both sides are
>= 600 pixels and the crop keeps nearly all of the image (e.g. 612x612 or 640x640 uncropped;
with the jitter off those differ from the reference by a mean 0.2, max 29 grey levels). Crop,
flip and resize are the same PIL calls in the same order in both (flip before resize), boxes
and labels are identical, and everything is C code that releases the GIL, so thread workers
scale.
No torch op runs per image (torch's intra-op threads would fight the workers for the cores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS
from ssd_data.host.color import jitter_fused, jitter_reference
from ssd_data.host.decode import load_rgb, open_image, rgb_array
from ssd_data.samples.crop import crop_pixels, flip_boxes, sample_crop
from ssd_data.samples.jitter import sample_jitter
from ssd_data.samples.loop import OUTPUT_SIZE, AugmentImpl

__all__ = ["OUTPUT_SIZE", "AugmentImpl", "Augmented", "augment_train", "resize_eval"]


@dataclass(frozen=True)
class Augmented:
    """One transformed image: ``image`` uint8[300, 300, 3] RGB (HWC); ``boxes`` float32[k, 4]
    ltrb normalised to the output; ``labels`` int64[k]; ``decoded_hw`` the file's (height, width)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    decoded_hw: tuple[int, int]


def _draft_size(fraction_w: float, fraction_h: float) -> tuple[int, int]:
    """Smallest full-image size at which a crop of these fractions still covers the output."""
    return math.ceil(OUTPUT_SIZE / fraction_w), math.ceil(OUTPUT_SIZE / fraction_h)


def augment_train(
    path: Path,
    boxes: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_attempts: int = 1,
    hue: float = 0.05,
    impl: AugmentImpl = "fast",
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> Augmented:
    """Read ``path`` and apply the training augmentation.

    ``boxes`` float32[n, 4] ltrb normalised to the image, ``labels`` int64[n]. Raises
    :class:`ssd_data.errors.UnreadableImage` for a missing, truncated or non-image file, or one
    whose header declares more than ``max_pixels`` pixels.
    """
    image = open_image(path, max_pixels)
    decoded_hw = (image.size[1], image.size[0])
    crop = sample_crop(boxes, rng, crop_attempts)
    flip = bool(rng.random() < 0.5)
    jitter = sample_jitter(rng, hue=hue)
    out_boxes = flip_boxes(crop.boxes) if flip else crop.boxes
    out_labels = labels[crop.keep]
    size = (OUTPUT_SIZE, OUTPUT_SIZE)

    if impl == "fast":
        rect = crop.rect or (0.0, 0.0, 1.0, 1.0)
        rgb = load_rgb(image, path, _draft_size(rect[2] - rect[0], rect[3] - rect[1]))
        if crop.rect is not None:
            rgb = rgb.crop(crop_pixels(crop.rect, rgb.width, rgb.height))
        if flip:  # before the resize, as the reference
            rgb = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        rgb = jitter_fused(rgb.resize(size, Image.Resampling.BILINEAR), jitter)
    else:
        rgb = load_rgb(image, path)
        if crop.rect is not None:
            rgb = rgb.crop(crop_pixels(crop.rect, rgb.width, rgb.height))
        if flip:
            rgb = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        rgb = jitter_reference(rgb.resize(size, Image.Resampling.BILINEAR), jitter)
    return Augmented(rgb_array(rgb), out_boxes.astype(np.float32), out_labels, decoded_hw)


def resize_eval(
    path: Path, *, impl: AugmentImpl = "fast", max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read ``path`` and resize it to uint8[300, 300, 3]; also returns the file's (height, width).

    Raises :class:`ssd_data.errors.UnreadableImage` (also above ``max_pixels``).
    """
    image = open_image(path, max_pixels)
    decoded_hw = (image.size[1], image.size[0])
    size = (OUTPUT_SIZE, OUTPUT_SIZE)
    rgb = load_rgb(image, path, size if impl == "fast" else None)
    return rgb_array(rgb.resize(size, Image.Resampling.BILINEAR)), decoded_hw
