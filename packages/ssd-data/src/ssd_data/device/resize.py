"""Crop + flip + resize to 300x300 of decoded images of different sizes, on any torch device.

PIL's BILINEAR resize (what both CPU paths use) is separable: a horizontal pass, rounding to
uint8, then a vertical pass, each with per-output-pixel triangle weights whose support widens
with the downscale factor (antialiasing) and which are renormalised at the image border; for
8-bit images PIL quantises the weights to 22 fractional bits and rounds half up. Here each pass
is a matrix product with the same quantised weights (built batched on the device by
:func:`pil_resize_weights`), in float64 so the sums are exact integers x 2^-22: the result is
PIL's, pixel for pixel (tests/data/test_device_augment.py). The crop is a slice of the decoded
image, the flip a reversal of that slice, both before the resize as in the reference.

The whole batch runs in a constant number of operations: the decoded images are padded to the
batch's largest image (one uint8 [N, 3, Hp, Wp] tensor), the crop and flip are folded into
per-image weight matrices gathered from the crop's weights (zero outside the crop), and both
passes are batched matmuls. PIL picks the pass order per crop size; the images are grouped by
it (the host orders them, :func:`vertical_first`), so each group is one pair of batched
matmuls. Cost: the float64 copy of the padded batch (N x 3 x Hp x Wp x 8 bytes: ~1.9 GB at
batch 256 for 640x480 photos) and multiply-adds over the whole image instead of the crop (the
SSD crop keeps 30..100% of each side). Alternatives considered: ``roi_align`` (box-filter
sampling: not PIL's triangle filter, so not comparable pixel for pixel) and grouping by crop
size (nearly every crop size differs: one group per image, i.e. the per-image loop).
"""

from __future__ import annotations

import warnings

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


def pad_images(images: list[torch.Tensor]) -> torch.Tensor:
    """uint8 [N, 3, Hp, Wp]: the images uint8 [3, H_i, W_i] (one device, any strides) at the
    top left of zero padding to the largest height and width, in two dispatched operations (a
    nested tensor, then its padded form) whatever N.

    Inside ``to_padded_tensor``, uint8 takes ATen's generic path: one pad per image and a
    stack, launched from C++ (no Python per image, no sync). Its single-kernel CUDA path (float
    types only) copies the size metadata from pageable host memory, a host sync, so it is not
    used. One gather kernel from the decoded buffer would remove the per-image launches."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage.*")
        return torch.nested.to_padded_tensor(torch.nested.as_nested_tensor(images), 0)


def full_image_weights(
    crop_size: torch.Tensor,
    start: torch.Tensor,
    flip: torch.Tensor,
    length: int,
    out_size: int = OUTPUT_SIZE,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Weights [N, out_size, length] of crop + (flip) + PIL bilinear resample along one axis,
    indexed by the pixel of the whole (padded) decoded image.

    ``crop_size``, ``start`` (first cropped pixel) and ``flip`` (1.0: mirrored) are float
    [N] whole numbers on the device. The crop's weights (:func:`pil_resize_weights`) are
    gathered to the image's pixels: pixel x is crop pixel ``x - start`` (``start + size - 1 -
    x`` when flipped); pixels outside the crop, padding included, get weight 0.
    """
    n = crop_size.shape[0]
    crop_w = pil_resize_weights(crop_size, length, out_size, dtype)
    x = torch.arange(length, dtype=torch.float64, device=crop_size.device).view(1, -1)
    first, size = start.to(torch.float64).view(-1, 1), crop_size.to(torch.float64).view(-1, 1)
    j = torch.where(flip.view(-1, 1) > 0.5, first + size - 1 - x, x - first)  # [N, length]
    inside = (j >= 0) & (j < size)
    index = j.clamp(0, length - 1).to(torch.int64).unsqueeze(1).expand(n, out_size, length)
    return torch.where(inside.unsqueeze(1), crop_w.gather(2, index), 0.0)


def crop_flip_resize(
    images: torch.Tensor,
    crops: torch.Tensor,
    order: torch.Tensor,
    num_vertical: int,
    out_size: int = OUTPUT_SIZE,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Crop, flip and resize a padded batch of decoded images to ``out_size`` squared, in a
    constant number of operations (two batched matmuls and two roundings per pass order).

    ``images`` uint8 [N, 3, Hp, Wp] (each image at the top left, zero padding); ``crops`` float32
    [N, 5] on the device: (left, top, right, bottom, flip), pixel crops (right/bottom exclusive),
    flip 1.0 = mirror; ``order`` int64 [N] on the device: the images whose resize runs the
    vertical pass first (:func:`vertical_first`) come first, ``num_vertical`` of them (a host
    value, from the host copy of the decisions: no sync). Returns float32 [N, 3, out, out]
    whole grey levels 0..255 (PIL's result). The crop and flip are folded into the weights
    (:func:`full_image_weights`): padding and cropped-away pixels have weight 0, which adds
    exact zeros to the exact float64 sums, so the pixels are those of cropping first.
    """
    n, _, hp, wp = images.shape
    left, top, right, bottom, flip = crops.unbind(1)
    wx = full_image_weights(right - left, left, flip, wp, out_size, dtype)  # [N, out, Wp]
    wy = full_image_weights(bottom - top, top, flip.new_zeros(()).expand(n), hp, out_size, dtype)
    out = images.new_empty(n, 3, out_size, out_size, dtype=torch.float32)
    vertical, horizontal = order[:num_vertical], order[num_vertical:]
    # Vertical pass first: [3, Hp, Wp] -> [3, out, Wp] (uint8 between the passes) -> [3, out, out].
    x = images.index_select(0, vertical).to(dtype)
    cols = _round(torch.matmul(wy.index_select(0, vertical).unsqueeze(1), x))
    y = _round(torch.matmul(cols, wx.index_select(0, vertical).transpose(1, 2).unsqueeze(1)))
    out.index_copy_(0, vertical, y.to(torch.float32))
    # Horizontal pass first: [3, Hp, Wp] -> [3, Hp, out] -> [3, out, out].
    x = images.index_select(0, horizontal).to(dtype)
    rows = _round(torch.matmul(x, wx.index_select(0, horizontal).transpose(1, 2).unsqueeze(1)))
    y = _round(torch.matmul(wy.index_select(0, horizontal).unsqueeze(1), rows))
    out.index_copy_(0, horizontal, y.to(torch.float32))
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
