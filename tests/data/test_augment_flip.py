"""Both augmentation implementations flip where the reference does: after the crop, before the
resize (mlperf-ssd-v0.7.md 3.2). PIL's bilinear resize happens to be mirror-symmetric, so the
order is checked with the PIL calls themselves and with a resize that is not symmetric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ssd_data.host import augment

from tests.helpers.datasets import write_jpeg

BOXES = np.array([[0.2, 0.1, 0.6, 0.7]], np.float32)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "f.jpg"
    write_jpeg(path, 203, 151, np.random.default_rng(4))
    return path


def _run(path: Path, seed: int, impl: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return augment.augment_train(path, BOXES, np.array([1]), rng, impl=impl).image  # type: ignore[arg-type]


def test_flip_comes_before_the_resize_in_both(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    transpose, resize = Image.Image.transpose, Image.Image.resize

    def spy_transpose(self: Image.Image, method: Image.Transpose) -> Image.Image:
        calls.append("flip")
        return transpose(self, method)

    def spy_resize(self: Image.Image, size: tuple[int, int], *args, **kw) -> Image.Image:
        calls.append("resize")
        return resize(self, size, *args, **kw)

    monkeypatch.setattr(Image.Image, "transpose", spy_transpose)
    monkeypatch.setattr(Image.Image, "resize", spy_resize)
    flipped = 0
    for seed in range(8):
        orders = {}
        for impl in ("fast", "reference"):
            calls.clear()
            _run(path, seed, impl)
            orders[impl] = [c for c in calls if c in ("flip", "resize")][:2]
        assert orders["fast"] == orders["reference"], seed
        flipped += orders["fast"] == ["flip", "resize"]
    assert 0 < flipped < 8  # both branches seen


def test_same_pixels_with_an_asymmetric_resize(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # jitter off and a resize that is not mirror-symmetric (nearest neighbour of the left 90%):
    # flipping after the resize would give other pixels than flipping before it
    monkeypatch.setattr(augment, "jitter_fused", lambda image, p: image)
    monkeypatch.setattr(augment, "jitter_reference", lambda image, p: image)
    resize = Image.Image.resize

    def lopsided(self: Image.Image, size: tuple[int, int], *args, **kw) -> Image.Image:
        box = (0, 0, int(self.width * 0.9), self.height)
        return resize(self, size, Image.Resampling.NEAREST, box=box)

    monkeypatch.setattr(Image.Image, "resize", lopsided)
    for seed in range(8):
        np.testing.assert_array_equal(_run(path, seed, "fast"), _run(path, seed, "reference"))
