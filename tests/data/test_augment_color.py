"""Colour jitter: the reference implementation equals torchvision's ColorJitter, and the fused
one stays close to it (bounded, documented difference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from ssd_data.host.color import hue_rotation, jitter_fused, jitter_reference
from ssd_data.samples.jitter import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    JitterParams,
    sample_jitter,
)
from torchvision import transforms
from torchvision.transforms import functional


def _natural_image(seed: int = 0, size: int = 64) -> np.ndarray:
    """uint8[size, size, 3] smooth colourful image, values well inside 0..255 mostly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    chans = [
        60
        + 120 * (0.5 + 0.5 * np.sin(6 * x * rng.uniform(0.5, 2) + 4 * y * rng.uniform(0.5, 2) + c))
        for c in range(3)
    ]
    return np.stack(chans, -1).astype(np.uint8)


def test_reference_equals_torchvision_colorjitter(monkeypatch: pytest.MonkeyPatch) -> None:
    img = Image.fromarray(_natural_image())
    for seed in range(8):
        p = sample_jitter(np.random.default_rng(seed))
        order = torch.tensor(p.order)
        monkeypatch.setattr(
            transforms.ColorJitter,
            "get_params",
            staticmethod(
                lambda *a, p=p, order=order: (order, p.brightness, p.contrast, p.saturation, p.hue)
            ),
        )
        expected = transforms.ColorJitter(0.125, 0.5, 0.5, 0.05)(img)
        np.testing.assert_array_equal(np.asarray(jitter_reference(img, p)), np.asarray(expected))


def test_sampled_ranges_and_order() -> None:
    ps = [sample_jitter(np.random.default_rng(s), hue=0.05) for s in range(2000)]
    b = np.array([p.brightness for p in ps])
    c = np.array([p.contrast for p in ps])
    s = np.array([p.saturation for p in ps])
    h = np.array([p.hue for p in ps])
    assert b.min() >= 0.875 and b.max() <= 1.125 and b.max() - b.min() > 0.24
    assert c.min() >= 0.5 and c.max() <= 1.5 and s.min() >= 0.5 and s.max() <= 1.5
    assert h.min() >= -0.05 and h.max() <= 0.05 and abs(h.mean()) < 0.003
    assert all(sorted(p.order) == [0, 1, 2, 3] for p in ps)
    assert len({p.order for p in ps}) == 24  # all permutations occur


def test_hue_rotation_matrix() -> None:
    third = hue_rotation(1 / 3)
    np.testing.assert_allclose(third @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # red -> green
    np.testing.assert_allclose(third @ [0, 1, 0], [0, 0, 1], atol=1e-12)  # green -> blue
    r = hue_rotation(0.037)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(r @ [1, 1, 1], [1, 1, 1], atol=1e-12)  # greys unchanged


def _single(op: int, factor: float) -> JitterParams:
    values = {BRIGHTNESS: 1.0, CONTRAST: 1.0, SATURATION: 1.0, HUE: 0.0}
    values[op] = factor
    order = (op, *(o for o in range(4) if o != op))
    return JitterParams(
        values[BRIGHTNESS], values[CONTRAST], values[SATURATION], values[HUE], order
    )


@pytest.mark.parametrize(
    ("op", "factor"),
    [
        (BRIGHTNESS, 1.1),
        (BRIGHTNESS, 0.9),
        (CONTRAST, 1.4),
        (CONTRAST, 0.6),
        (SATURATION, 1.45),
        (SATURATION, 0.55),
    ],
)
def test_fused_linear_ops_match_reference_within_rounding(op: int, factor: float) -> None:
    hwc = _natural_image(3)
    p = _single(op, factor)
    single = {
        BRIGHTNESS: functional.adjust_brightness,
        CONTRAST: functional.adjust_contrast,
        SATURATION: functional.adjust_saturation,
    }[op]
    ref = np.asarray(single(Image.fromarray(hwc), factor)).astype(int)
    fused = np.asarray(jitter_fused(Image.fromarray(hwc), p)).astype(int)
    assert np.abs(fused - ref).max() <= 1  # PIL rounds the contrast mean to an integer


def test_fused_full_jitter_is_close_to_reference() -> None:
    diffs = []
    for seed in range(20):
        hwc = _natural_image(seed)
        p = sample_jitter(np.random.default_rng(seed + 100))
        ref = np.asarray(jitter_reference(Image.fromarray(hwc), p)).astype(float)
        fused = np.asarray(jitter_fused(Image.fromarray(hwc), p))
        diffs.append(np.abs(fused - ref).mean())
    # The hue model (rotation about the grey axis vs. HSV shift) and single final clamping
    # give a mean absolute difference of a few grey levels out of 255.
    assert np.mean(diffs) < 4.0, diffs


def test_positive_hue_moves_red_towards_yellow_like_hsv() -> None:
    red = Image.new("RGB", (8, 8), (200, 40, 40))
    p = JitterParams(1.0, 1.0, 1.0, 0.04, (HUE, 0, 1, 2))
    out = np.asarray(jitter_fused(red, p))[0, 0].astype(int)
    ref = np.asarray(jitter_reference(red, p))[0, 0].astype(int)
    assert out[1] > 40 and ref[1] > 40  # green rises in both
    assert abs(out[1] - ref[1]) < 25
