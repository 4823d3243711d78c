"""Colour jitter of the device input path, batched over images with per-image factors and order.

Images are float tensors [N, 3, H, W] holding whole grey levels 0..255 (RGB); ``params`` the
float32 [N, NUM_COLUMNS] decisions of :mod:`ssd_data.device.samples` with the batch plan
(:mod:`ssd_data.device.plan`). No host sync and a constant number of operations: the per-image
order is applied by grouping the images by op at each step (the plan's orders); constants are
created once per device.

- :func:`jitter_reference_batch` re-does, op for op, what the CPU ``reference`` path does
  (torchvision's functional ops on PIL images = PIL ``ImageEnhance`` blends and PIL's 8-bit HSV
  hue shift), including PIL's arithmetic: float32 blend truncated to uint8 after each op, PIL's
  integer luma ``(19595 R + 38470 G + 7471 B + 2^15) >> 16``, the contrast mean rounded to an
  integer, PIL's RGB <-> HSV conversions. tests/data/test_device_color.py measures it against
  PIL.
- :func:`jitter_fused_batch` is :func:`ssd_data.host.color.jitter_fused` on tensors: one affine colour
  map per image (:func:`ssd_data.host.color.affine_map` composed batched), rounded once. Its mean colour
  is the exact mean of the image (the CPU version uses a 4x4-reduced copy).
"""

from __future__ import annotations

import functools
import math

import torch

from ssd_data.device.plan import C_JITTER_ORDER
from ssd_data.device.resize import floor_pos
from ssd_data.device.samples import (
    P_BRIGHTNESS,
    P_CONTRAST,
    P_HUE,
    P_HUE_SHIFT,
    P_ORDER,
    P_SATURATION,
)
from ssd_data.samples.jitter import BRIGHTNESS, CONTRAST, LUMA, SATURATION


def _col(params: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Column ``k`` of params as [N, 1, 1, 1] of ``dtype``."""
    return params[:, k].to(dtype).view(-1, 1, 1, 1)


def pil_luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's "L" of RGB images [N, 3, H, W] (whole grey levels) -> [N, 1, H, W], same dtype."""
    xi = x.to(torch.int32)
    y = (xi[:, 0] * 19595 + xi[:, 1] * 38470 + xi[:, 2] * 7471 + 0x8000) >> 16
    return y.unsqueeze(1).to(x.dtype)


def pil_blend(degenerate: torch.Tensor, image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.blend`` of uint8 images: trunc(clamp(d + alpha (x - d))) in float32."""
    d, x = degenerate.to(torch.float32), image.to(torch.float32)
    return floor_pos((d + alpha * (x - d)).clamp_(0, 255)).to(image.dtype)


def _f32(x: torch.Tensor) -> torch.Tensor:
    """Round float64 to float32 precision (what C does when it stores into a float)."""
    return x.to(torch.float32).to(torch.float64)


def pil_rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PIL's RGB -> HSV (Convert.c ``rgb2hsv_row``): float64 [N, 3, H, W] whole levels ->
    h, s, v float64 [N, H, W] whole levels 0..255."""
    r, g, b = x[:, 0].double(), x[:, 1].double(), x[:, 2].double()
    maxc = torch.maximum(r, torch.maximum(g, b))
    minc = torch.minimum(r, torch.minimum(g, b))
    cr = (maxc - minc).to(torch.float32)
    safe = torch.where(cr == 0, torch.ones_like(cr), cr)
    s = cr / maxc.to(torch.float32).clamp(min=1)
    rc, gc, bc = (((maxc - c).to(torch.float32)) / safe for c in (r, g, b))
    h = torch.where(
        r == maxc,
        (bc - gc).double(),
        torch.where(
            g == maxc, _f32(2.0 + rc.double() - bc.double()), _f32(4.0 + gc.double() - rc.double())
        ),
    )
    h = _f32(torch.fmod(_f32(h) / 6.0 + 1.0, 1.0))
    grey = cr == 0
    uh = torch.where(grey, 0.0, floor_pos(h * 255.0).clamp(0, 255))
    us = torch.where(grey, 0.0, floor_pos(s.double() * 255.0).clamp(0, 255))
    return uh, us, maxc


def pil_hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PIL's HSV -> RGB (Convert.c ``hsv2rgb``), float64 [N, H, W] each -> [N, 3, H, W]."""
    hh = h * 6.0 / 255.0
    i = floor_pos(hh)
    f = _f32(hh - i)
    fs = _f32(s / 255.0)
    p = floor_pos(v * (1.0 - fs) + 0.5).clamp(0, 255)
    q = floor_pos(v * (1.0 - _f32(fs * f)) + 0.5).clamp(0, 255)
    t = floor_pos(v * (1.0 - fs * (1.0 - f)) + 0.5).clamp(0, 255)
    sector = torch.remainder(i, 6)
    table = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}
    out = []
    for c in range(3):
        channel = v
        for k in range(5, -1, -1):
            channel = torch.where(sector == k, table[k][c], channel)
        out.append(torch.where(s == 0, v, channel))
    return torch.stack(out, 1)


def pil_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_hue`` on PIL: HSV, hue channel + ``shift`` (whole levels, [N,1,1,1])
    mod 256, back to RGB. ``x`` [N, 3, H, W] whole levels, returned in x's dtype."""
    h, s, v = pil_rgb_to_hsv(x)
    h = torch.remainder(h + shift.double().view(-1, 1, 1), 256)
    return pil_hsv_to_rgb(h, s, v).to(x.dtype)


def _apply_op(x: torch.Tensor, params: torch.Tensor, op: int) -> torch.Tensor:
    """One reference colour op on every image of ``x`` with its own factor."""
    if op == BRIGHTNESS:
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return pil_blend(zero, x, _col(params, P_BRIGHTNESS, torch.float32))
    if op == CONTRAST:
        mean = pil_luma(x).double().mean(dim=(1, 2, 3), keepdim=True)
        return pil_blend(floor_pos(mean + 0.5), x, _col(params, P_CONTRAST, torch.float32))
    if op == SATURATION:
        return pil_blend(pil_luma(x), x, _col(params, P_SATURATION, torch.float32))
    return pil_hue(x, _col(params, P_HUE_SHIFT, torch.float32))


def jitter_reference_batch(
    x: torch.Tensor, decisions: torch.Tensor, group_sizes: list[list[int]]
) -> torch.Tensor:
    """The reference colour jitter of each image of ``x`` float32 [N, 3, H, W] (whole levels),
    in each image's own order; returns float32 [N, 3, H, W] whole levels.

    ``decisions`` float32 [N, NUM_COLUMNS] on x's device (the batch plan's columns included,
    :mod:`ssd_data.device.plan`); ``group_sizes`` [step][op] the host's group sizes
    (:func:`~ssd_data.device.plan.jitter_group_sizes`). At each of the four steps the images
    are sorted by op (the plan's order), each op runs once on its contiguous group, and the
    results go back to their places: every image runs each op once, in a constant number of
    operations, without a device sync.
    """
    for step in range(4):
        order = decisions[:, C_JITTER_ORDER + step].to(torch.int64)
        xs, ps = x.index_select(0, order), decisions.index_select(0, order)
        parts, start = [], 0
        for op, size in enumerate(group_sizes[step]):  # empty groups too: constant op count
            parts.append(_apply_op(xs[start : start + size], ps[start : start + size], op))
            start += size
        x = torch.empty_like(x).index_copy_(0, order, torch.cat(parts))
    return x


@functools.cache
def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """float64 constants of the fused jitter on ``device``, created once per device (building
    them per batch would be a blocking host-to-device copy each time)."""
    k = 1 / math.sqrt(3)
    axis = torch.full((3,), k, dtype=torch.float64)
    luma = torch.tensor(LUMA, dtype=torch.float64)
    host = {
        "luma": luma,
        "eye": torch.eye(3, dtype=torch.float64),
        "grey": torch.outer(torch.ones(3, dtype=torch.float64), luma),
        "cross": torch.tensor([[0, -k, k], [k, 0, -k], [-k, k, 0]], dtype=torch.float64),
        "axis_outer": torch.outer(axis, axis),
    }
    return {name: t.to(device) for name, t in host.items()}


def _hue_rotation_batch(hue: torch.Tensor) -> torch.Tensor:
    """float64 [N, 3, 3] rotations about the grey axis by ``hue`` [N] turns
    (:func:`ssd_data.host.color.hue_rotation` batched)."""
    const = _constants(hue.device)
    theta = 2 * math.pi * hue.double()
    c, s = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    return c * const["eye"] + s * const["cross"] + (1 - c) * const["axis_outer"]


def affine_maps(params: torch.Tensor, mean_rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A float64 [N, 3, 3], t float64 [N, 3]): :func:`ssd_data.host.color.affine_map` for every image;
    ``mean_rgb`` float64 [N, 3] is each image's mean colour before jitter."""
    n, dev = params.shape[0], params.device
    const = _constants(dev)
    p = params.double()
    luma, grey = const["luma"], const["grey"]
    eye = const["eye"].expand(n, 3, 3)
    a, t = eye.clone(), p.new_zeros(n, 3)
    b = p[:, P_BRIGHTNESS].view(-1, 1, 1)
    c = p[:, P_CONTRAST].view(-1, 1, 1)
    s = p[:, P_SATURATION].view(-1, 1, 1)
    m_sat = s * eye + (1 - s) * grey
    m_hue = _hue_rotation_batch(p[:, P_HUE])
    for step in range(4):
        op = p[:, P_ORDER + step].view(-1, 1, 1)
        mean_luma = ((a @ mean_rgb.unsqueeze(-1)).squeeze(-1) + t) @ luma  # [N]
        m = torch.where(op == BRIGHTNESS, b * eye, torch.where(op == SATURATION, m_sat, m_hue))
        linear_a, linear_t = m @ a, (m @ t.unsqueeze(-1)).squeeze(-1)
        contrast_a = c * a
        contrast_t = c[:, :, 0] * t + (1 - c[:, :, 0]) * mean_luma.unsqueeze(-1)
        is_c = op == CONTRAST
        a = torch.where(is_c, contrast_a, linear_a)
        t = torch.where(is_c[:, :, 0], contrast_t, linear_t)
    return a, t


def jitter_fused_batch(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The fused colour jitter: y = floor(clamp(A x + t + 0.5, 0, 255)) per image, like PIL's
    colour-matrix conversion. ``x`` float32 [N, 3, H, W] whole levels; returns the same."""
    a, t = affine_maps(params, x.double().mean(dim=(2, 3)))
    a, t = a.to(x.dtype), t.to(x.dtype)
    out = torch.empty_like(x)
    for ch in range(3):
        y = t[:, ch].view(-1, 1, 1) + 0.5
        for j in range(3):
            y = y + a[:, ch, j].view(-1, 1, 1) * x[:, j]
        out[:, ch] = floor_pos(y.clamp_(0, 255))
    return out
