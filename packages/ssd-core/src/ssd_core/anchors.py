"""SSD300 default boxes (anchors), value for value the MLPerf reference ``dboxes300_coco()``.

Layout (spec section 1.4): for each of the six levels, the size list is the outer loop, then the
row ``i``, then the column ``j``. Centres are ``((j + 0.5) / f_k, (i + 0.5) / f_k)`` with
``f_k = 300 / step_k`` (not the feature-map size). The xywh boxes are clamped to [0, 1] and the ltrb
boxes are derived from the clamped xywh boxes without clamping again (so some ltrb coordinates lie
slightly outside [0, 1]). The reference builds its table from NumPy float64 centres, so its boxes
are float64 tensors; so are ours: ``dtype=torch.float64`` gives the reference's values bit for bit,
any other dtype gives them correctly rounded.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

FIGURE_SIZE = 300
FEATURE_SIZES: tuple[int, ...] = (38, 19, 10, 5, 3, 1)
STEPS: tuple[int, ...] = (8, 16, 32, 64, 100, 300)
SCALES: tuple[int, ...] = (21, 45, 99, 153, 207, 261, 315)
ASPECT_RATIOS: tuple[tuple[int, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SCALE_XY = 0.1
SCALE_WH = 0.2
BOXES_PER_LOCATION: tuple[int, ...] = tuple(2 + 2 * len(ar) for ar in ASPECT_RATIOS)
NUM_ANCHORS = sum(n * f * f for n, f in zip(BOXES_PER_LOCATION, FEATURE_SIZES, strict=True))


def level_box_sizes(level: int) -> list[tuple[float, float]]:
    """The (w, h) sizes, normalised to the image, of one level's boxes in reference order.

    Two squares (``s_k`` and ``sqrt(s_k * s_{k+1})``), then for each aspect ratio ``a`` the pair
    ``(s_k * sqrt(a), s_k / sqrt(a))`` and its swap. Values are Python floats (float64), unclamped.
    """
    sk1 = SCALES[level] / FIGURE_SIZE
    sk2 = SCALES[level + 1] / FIGURE_SIZE
    sk3 = math.sqrt(sk1 * sk2)
    sizes = [(sk1, sk1), (sk3, sk3)]
    for alpha in ASPECT_RATIOS[level]:
        w, h = sk1 * math.sqrt(alpha), sk1 / math.sqrt(alpha)
        sizes.append((w, h))
        sizes.append((h, w))
    return sizes


def _xywh_float64(device: torch.device | str | None = None) -> Tensor:
    """Unclamped (cx, cy, w, h) boxes, float64 [A, 4], in reference order.

    Every value is a Python float computed exactly as the reference computes it; the tensor ops
    only copy and tile them, so the result is bit-identical on any device (also when traced by
    ``torch.compile``).
    """
    levels = []
    for level, (feat, step) in enumerate(zip(FEATURE_SIZES, STEPS, strict=True)):
        fk = FIGURE_SIZE / step
        centres = torch.tensor(
            [(j + 0.5) / fk for j in range(feat)], dtype=torch.float64, device=device
        )
        cx = centres.repeat(feat)  # column j varies fastest
        cy = centres.repeat_interleave(feat)  # then row i
        for w, h in level_box_sizes(level):
            levels.append(
                torch.stack((cx, cy, torch.full_like(cx, w), torch.full_like(cx, h)), dim=1)
            )
    return torch.cat(levels, dim=0)


def _reference_boxes(device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """(xywh, ltrb) float64 [A, 4] each, computed exactly as the reference does."""
    xywh = _xywh_float64(device).clamp(min=0.0, max=1.0)
    cx, cy, w, h = xywh.unbind(dim=1)
    ltrb = torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=1)
    return xywh, ltrb


_BOXES: tuple[Tensor, Tensor] | None = None


def default_boxes(
    order: Literal["xywh", "ltrb"] = "xywh",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The 8732 SSD300 default boxes, normalised to [0, 1] of the 300x300 input.

    Args:
        order: ``"xywh"`` for (cx, cy, w, h), clamped to [0, 1]; ``"ltrb"`` for
            (left, top, right, bottom) derived from the clamped xywh boxes (not clamped again).
        dtype: dtype of the result; the reference's float64 values are cast to it.
        device: device of the result (default CPU).

    Returns:
        Tensor [8732, 4] (a fresh tensor each call), in the order the SSD300 heads emit anchors:
        level (38, 19, 10, 5, 3, 1), then box size, then row, then column.
    """
    global _BOXES
    if order not in ("xywh", "ltrb"):
        raise ValueError(f"default_boxes: order must be 'xywh' or 'ltrb', got {order!r}")
    if torch.compiler.is_compiling():
        # Inside a compiled region: build the table on the target device (no CPU constant, no
        # global mutation); it is tiny and bit-identical to the cached one.
        xywh, ltrb = _reference_boxes(device)
        return (xywh if order == "xywh" else ltrb).to(dtype=dtype)
    if _BOXES is None:
        _BOXES = _reference_boxes()
    boxes = _BOXES[0] if order == "xywh" else _BOXES[1]
    return boxes.to(device=device, dtype=dtype, copy=True)
