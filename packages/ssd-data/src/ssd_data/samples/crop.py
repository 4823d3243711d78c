"""SSD random crop and horizontal flip decided on normalised boxes, before any pixel is read.

The MLPerf reference's ``SSDCropping`` (mlperf-ssd-v0.7.md 3.2), draw for draw:
- choose uniformly among 7 options: keep the original image; minimum IoU 0.1, 0.3, 0.5, 0.7,
  0.9; or no IoU constraint;
- per attempt (``attempts`` = 1 or 50 per drawn option): crop width and height each
  U(0.3, 1) of the image, rejected if w/h < 0.5 or w/h > 2; left U(0, 1-w), top U(0, 1-h);
  rejected unless the IoU with EVERY ground-truth box is strictly above the minimum; boxes whose
  centre is not strictly inside the crop are dropped, and the attempt is rejected if none
  remains; kept boxes are clipped to the crop and renormalised to it;
- after the attempts fail, a new option is drawn (the reference never gives up; here after
  ``MAX_OPTION_DRAWS`` draws, probability < 1e-60, the original image is kept).
Because only normalised coordinates are involved, the crop is known before decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The seven options: ``None`` keeps the image, a float is the minimum IoU, ``-inf`` means
#: "no constraint".
CROP_OPTIONS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, float("-inf"))
MAX_OPTION_DRAWS = 1000


@dataclass(frozen=True)
class CropResult:
    """Outcome of :func:`sample_crop`.

    ``rect`` is the crop (left, top, right, bottom) normalised to the image, or ``None`` for
    "keep the original image"; ``keep`` bool[n] marks the input boxes that survive; ``boxes``
    float32[k, 4] are the surviving boxes, ltrb, normalised to the crop; ``option`` is the
    index into :data:`CROP_OPTIONS` that produced the result.
    """

    rect: tuple[float, float, float, float] | None
    keep: np.ndarray
    boxes: np.ndarray
    option: int


def box_iou(boxes: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """IoU float64[n] of ltrb ``boxes`` [n, 4] with one ltrb rectangle."""
    left, top, right, bottom = rect
    iw = np.clip(np.minimum(boxes[:, 2], right) - np.maximum(boxes[:, 0], left), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], bottom) - np.maximum(boxes[:, 1], top), 0, None)
    inter = iw * ih
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (right - left) * (bottom - top) - inter)


def sample_crop(boxes: np.ndarray, rng: np.random.Generator, attempts: int = 1) -> CropResult:
    """Draw the SSD random crop for ltrb normalised ``boxes`` float32[n, 4] (n may be 0)."""
    boxes64 = boxes.astype(np.float64)
    n = len(boxes)
    for _ in range(MAX_OPTION_DRAWS):
        option = int(rng.integers(len(CROP_OPTIONS)))
        min_iou = CROP_OPTIONS[option]
        if min_iou is None:
            return CropResult(None, np.ones(n, np.bool_), boxes.astype(np.float32), option)
        for _ in range(attempts):
            w = rng.uniform(0.3, 1.0)
            h = rng.uniform(0.3, 1.0)
            if w / h < 0.5 or w / h > 2:
                continue
            left = rng.uniform(0, 1.0 - w)
            top = rng.uniform(0, 1.0 - h)
            right, bottom = left + w, top + h
            if not np.all(box_iou(boxes64, (left, top, right, bottom)) > min_iou):
                continue
            xc = 0.5 * (boxes64[:, 0] + boxes64[:, 2])
            yc = 0.5 * (boxes64[:, 1] + boxes64[:, 3])
            keep = (xc > left) & (xc < right) & (yc > top) & (yc < bottom)
            if not keep.any():
                continue
            kept = boxes64[keep]
            kept[:, 0::2] = (np.clip(kept[:, 0::2], left, right) - left) / w
            kept[:, 1::2] = (np.clip(kept[:, 1::2], top, bottom) - top) / h
            return CropResult((left, top, right, bottom), keep, kept.astype(np.float32), option)
    return CropResult(None, np.ones(n, np.bool_), boxes.astype(np.float32), 0)


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Mirror ltrb normalised boxes [k, 4] left-right: (l, t, r, b) -> (1 - r, t, 1 - l, b)."""
    out = boxes.copy()
    out[:, 0] = 1.0 - boxes[:, 2]
    out[:, 2] = 1.0 - boxes[:, 0]
    return out


def crop_pixels(
    rect: tuple[float, float, float, float], width: int, height: int
) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of a normalised crop, truncated like the reference
    (``int(left * W)`` ...), at least one pixel wide and high."""
    left, top, right, bottom = (
        int(rect[0] * width),
        int(rect[1] * height),
        int(rect[2] * width),
        int(rect[3] * height),
    )
    return left, top, max(right, left + 1), max(bottom, top + 1)
