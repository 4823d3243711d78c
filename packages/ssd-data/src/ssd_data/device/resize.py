"""Crop + flip + resize to 300x300 of decoded images of different sizes, on any torch device.

PIL's BILINEAR resize (what both CPU paths use) is separable: a horizontal pass, rounding to
uint8, then a vertical pass, each with per-output-pixel triangle weights whose support widens
with the downscale factor (antialiasing) and which are renormalised at the image border; for
8-bit images PIL quantises the weights to 22 fractional bits and rounds half up. Here each pass
is a matrix product with the same quantised weights (built batched on the device by
:func:`pil_resize_weights`), in float64 so the sums are exact integers x 2^-22: the result is
PIL's, pixel for pixel (tests/data/test_device_augment.py). The crop is a slice of the decoded
image, the flip a reversal of that slice, both before the resize as in the reference.

Per image: two matmuls and a rounding (different crop sizes); the weights for the whole batch
come from one set of batched ops. Alternatives considered: ``roi_align`` (box-filter sampling:
not PIL's triangle filter, so not comparable pixel for pixel) and one padded batched matmul
(memory N x 3 x Hmax x Wmax in float64).
"""

from __future__ import annotations

import torch

from ssd_data.samples.loop import OUTPUT_SIZE

#: PIL's fixed-point precision of resampling weights for 8-bit images (Resample.c).
PRECISION_BITS = 32 - 8 - 2


def floor_pos(x: torch.Tensor) -> torch.Tensor:
    """floor of non-negative values (trunc of negative ones), exact: ``x - fmod(x, 1)``.
    (torch's floor/trunc/round cost ~20 ms per call on this project's CPU build of torch,
    whatever the size; fmod does not.)"""
    return x - torch.fmod(x, 1.0)


def pil_resize_weights(
    in_size: torch.Tensor,
    length: int,
    out_size: int = OUTPUT_SIZE,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Weights [N, out_size, length] of PIL's bilinear resample from ``in_size`` [N] pixels
    (whole numbers, <= ``length``) to ``out_size``; row o holds the weights of the input pixels
    of output pixel o (zero beyond ``in_size``), quantised as PIL does for 8-bit images."""
    dev = in_size.device
    size = in_size.to(torch.float64).view(-1, 1, 1)
    scale = size / out_size
    filterscale = scale.clamp(min=1.0)
    support = filterscale * 1.0  # bilinear filter support 1
    center = (torch.arange(out_size, dtype=torch.float64, device=dev).view(1, -1, 1) + 0.5) * scale
    xmin = floor_pos(center - support + 0.5).clamp(min=0)
    xmax = torch.minimum(floor_pos(center + support + 0.5), size)
    x = torch.arange(length, dtype=torch.float64, device=dev).view(1, 1, -1)
    w = (1.0 - ((x - center + 0.5) / filterscale).abs()).clamp(min=0)
    w = torch.where((x >= xmin) & (x < xmax), w, 0.0)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, 1.0, total)
    one = float(1 << PRECISION_BITS)
    return (floor_pos(w * one + 0.5) / one).to(dtype)


def crop_flip_resize(
    images: list[torch.Tensor],
    rects: list[tuple[int, int, int, int]],
    flips: list[bool],
    out: torch.Tensor,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Crop, flip and resize each decoded image into ``out``.

    ``images`` uint8 [3, H_i, W_i] on one device; ``rects`` (left, top, right, bottom) pixel
    crops (right/bottom exclusive) and ``flips`` are host values (no sync); ``out`` float32
    [N, 3, 300, 300] receives whole grey levels 0..255 (PIL's result). Returns ``out``.
    """
    dev = out.device
    widths = torch.tensor([r - left for left, _, r, _ in rects], device="cpu")
    heights = torch.tensor([b - t for _, t, _, b in rects], device="cpu")
    size = out.shape[-1]
    wx = pil_resize_weights(widths.to(dev, non_blocking=True), int(widths.max()), size, dtype)
    wy = pil_resize_weights(
        heights.to(dev, non_blocking=True), int(heights.max()), out.shape[-2], dtype
    )
    for k, (image, (left, top, right, bottom), flip) in enumerate(
        zip(images, rects, flips, strict=True)
    ):
        crop = image[:, top:bottom, left:right]
        if flip:
            crop = crop.flip(-1)
        x, y = wx[k, :, : right - left], wy[k, :, : bottom - top]
        if vertical_first(right - left, bottom - top, out.shape[-2]):
            cols = _round(torch.matmul(y, crop.to(dtype)))  # [3, 300, w]; uint8 between passes
            out[k] = _round(torch.matmul(cols, x.T))
        else:
            rows = _round(torch.matmul(crop.to(dtype), x.T))  # [3, h, 300]
            out[k] = _round(torch.matmul(y, rows))
    return out


def _round(x: torch.Tensor) -> torch.Tensor:
    """PIL's fixed-point rounding of a pass: half up, clipped to 0..255."""
    return floor_pos(x.add_(0.5)).clamp_(0, 255)


def vertical_first(width: int, height: int, out_height: int = OUTPUT_SIZE) -> bool:
    """Whether PIL (13) runs the vertical pass first for this crop (it rounds to uint8 between
    the passes, so the order shows in the last bit). Fitted on 150 random sizes, where it
    picks the order that reproduces PIL exactly in all but ~2% (those differ by 1 level in
    some pixels): vertical first when the crop is taller than the output and at least ~1.2x
    taller than wide."""
    return height > out_height and height > 1.18 * width
