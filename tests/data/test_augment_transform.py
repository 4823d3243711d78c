"""End-to-end training/eval transforms on real JPEG files: boxes follow the pixels, modes,
determinism, and the fast path against the reference path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ssd_data.host import augment
from ssd_data.host.augment import augment_train, resize_eval

from tests.helpers.datasets import write_jpeg


def _white_box_image(path: Path, w: int = 160, h: int = 120) -> np.ndarray:
    """A dark image with one bright rectangle; returns its ltrb normalised box float32[1, 4]."""
    pixels = np.full((h, w, 3), 30, np.uint8)
    x0, y0, x1, y1 = 40, 30, 100, 90
    pixels[y0:y1, x0:x1] = 230
    Image.fromarray(pixels).save(path, format="PNG")  # lossless, so edges are exact
    return np.array([[x0 / w, y0 / h, x1 / w, y1 / h]], np.float32)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_boxes_follow_the_pixels_through_crop_flip_resize(tmp_path: Path, impl: str) -> None:
    path = tmp_path / "box.png"
    box = _white_box_image(path)
    flips = 0
    for seed in range(60):
        out = augment_train(
            path, box, np.array([1]), np.random.default_rng(seed), hue=0.0, impl=impl
        )
        assert out.image.shape == (300, 300, 3) and out.image.dtype == np.uint8
        assert out.boxes.shape == (1, 4) and out.labels.tolist() == [1]
        x0, y0, x1, y1 = np.round(out.boxes[0] * 300).astype(int)
        grey = out.image.astype(float).mean(axis=2)
        m = 8  # bilinear edges of an upscaled crop are a few output pixels wide
        inside = grey[y0 + m : y1 - m, x0 + m : x1 - m]
        if inside.size == 0:
            continue
        outside = np.ones_like(grey, bool)
        outside[max(y0 - m, 0) : y1 + m, max(x0 - m, 0) : x1 + m] = False
        assert inside.min() > grey[outside].max() if outside.any() else True
        flips += int(out.boxes[0, 0] > 1 - out.boxes[0, 2])  # the box moved to the right half
    assert 10 < flips < 50


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGB"])
def test_grayscale_and_cmyk_become_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.jpg"
    write_jpeg(path, 80, 60, np.random.default_rng(0), mode)
    assert Image.open(path).mode == mode
    out = augment_train(
        path, np.array([[0.1, 0.1, 0.9, 0.9]], np.float32), np.array([2]), np.random.default_rng(1)
    )
    assert out.image.shape == (300, 300, 3) and out.decoded_hw == (60, 80)
    image, hw = resize_eval(path)
    assert image.shape == (300, 300, 3) and hw == (60, 80)
    if mode == "L":  # grey stays grey (the eval path has no colour jitter)
        assert np.abs(image[..., 0].astype(int) - image[..., 1]).max() <= 1


def test_deterministic_and_fast_matches_reference(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    write_jpeg(path, 320, 240, np.random.default_rng(5))
    boxes = np.array([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.95]], np.float32)
    labels = np.array([1, 3])
    diffs = []
    for seed in range(10):
        a = augment_train(path, boxes, labels, np.random.default_rng(seed))
        b = augment_train(path, boxes, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.image, b.image)
        ref = augment_train(path, boxes, labels, np.random.default_rng(seed), impl="reference")
        np.testing.assert_array_equal(a.boxes, ref.boxes)  # same draws -> same geometry
        np.testing.assert_array_equal(a.labels, ref.labels)
        diffs.append(np.abs(a.image.astype(float) - ref.image).mean())
    assert np.mean(diffs) < 4.0, diffs


def test_eval_resize_is_pil_bilinear(tmp_path: Path) -> None:
    path = tmp_path / "e.jpg"
    write_jpeg(path, 200, 150, np.random.default_rng(2))
    rgb = Image.open(path).convert("RGB")
    expected = np.asarray(rgb.resize((300, 300), Image.Resampling.BILINEAR))
    for impl in ("fast", "reference"):
        np.testing.assert_array_equal(resize_eval(path, impl=impl)[0], expected)


def test_fast_and_reference_differ_only_in_colour_jitter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.jpg"
    write_jpeg(path, 200, 150, np.random.default_rng(3))
    monkeypatch.setattr(augment, "jitter_fused", lambda image, p: image)
    monkeypatch.setattr(augment, "jitter_reference", lambda image, p: image)
    boxes = np.array([[0.2, 0.1, 0.6, 0.7]], np.float32)
    for seed in range(10):
        fast = augment.augment_train(path, boxes, np.array([1]), np.random.default_rng(seed))
        ref = augment.augment_train(
            path, boxes, np.array([1]), np.random.default_rng(seed), impl="reference"
        )
        np.testing.assert_array_equal(fast.image, ref.image)
