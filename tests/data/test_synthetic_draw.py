"""Tests of the synthetic dataset's drawing and occlusion bookkeeping (RLE, visible extents)."""

from __future__ import annotations

import numpy as np
import pytest
from ssd_data.synthetic.draw import SHAPE_NAMES, rle_counts, rle_string, shape_mask
from ssd_data.synthetic.render import _Layer, _Scene


def test_rle_matches_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for h, w, p in ((7, 9, 0.5), (40, 31, 0.1), (5, 5, 1.0), (6, 4, 0.0), (64, 48, 0.9)):
        m = rng.random((h, w)) < p
        ours = rle_string(rle_counts(m))
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours == ref["counts"].decode()
        assert sum(rle_counts(m)) == h * w


def test_shapes_fill_their_box() -> None:
    for name in SHAPE_NAMES:
        m = shape_mask(name, 60, 40)
        assert m.shape == (40, 60)
        assert 0.25 < m.mean() <= 1.0, name
        ys, xs = np.nonzero(m)
        assert xs.min() == 0 and xs.max() == 59, name  # touches all four sides of the box
        assert ys.min() == 0 and ys.max() == 39, name


def _scene(w: int = 100, h: int = 80) -> _Scene:
    return _Scene(w, h, np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.int16))


def _square(n: int) -> np.ndarray:
    return np.ones((n, n), dtype=bool)


def test_occluder_shrinks_visible_extent_or_is_refused() -> None:
    scene = _scene()
    obj = _Layer(category_id=3, iscrowd=0, full_area=400, visible=0, rect=(0, 0, 0, 0))
    red = np.full((20, 20, 3), (200, 0, 0), np.uint8)
    assert scene.try_paint(10, 10, _square(20), red, obj, min_visible=0.7)
    assert obj.visible == 400 and obj.rect == (10, 10, 30, 30)
    # An occluder over the right half (200 px = 50 %) would leave 50 % < 70 %: refused, nothing changes.
    assert not scene.try_paint(20, 0, np.ones((60, 30), bool), None, None, min_visible=0.7)
    assert obj.visible == 400 and (scene.ids == 1).sum() == 400
    # Over the right 5 columns (100 px = 25 %): accepted, the visible extent is now x 10..24.
    grey = np.full((60, 30, 3), 128, np.uint8)
    assert scene.try_paint(25, 0, np.ones((60, 30), bool), grey, None, min_visible=0.7)
    assert obj.visible == 300
    ys, xs = np.nonzero(scene.ids == 1)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 24, 10, 29)
    assert (scene.rgb[10:30, 25:30] == 128).all() and (scene.rgb[10:30, 10:25, 0] == 200).all()


def test_truncated_object_is_clipped_and_too_truncated_is_refused() -> None:
    scene = _scene()
    # 10 of 20 columns outside the image: 50 % inside < 70 %: refused.
    far = _Layer(1, 0, 400, 0, (0, 0, 0, 0))
    assert not scene.try_paint(-10, 5, _square(20), None, far, min_visible=0.7)
    # 4 columns outside: 80 % inside: accepted and clipped at x = 0.
    near = _Layer(1, 0, 400, 0, (0, 0, 0, 0))
    assert scene.try_paint(-4, 5, _square(20), None, near, min_visible=0.7)
    assert near.visible == 320 and near.rect == (0, 5, 16, 25)


@pytest.mark.parametrize("min_visible", [0.5, 0.9])
def test_new_object_on_top_respects_older_objects(min_visible: float) -> None:
    scene = _scene()
    first = _Layer(1, 0, 400, 0, (0, 0, 0, 0))
    assert scene.try_paint(0, 0, _square(20), None, first, min_visible)
    second = _Layer(3, 0, 400, 0, (0, 0, 0, 0))
    # Covers 10 x 14 = 140 px (35 %) of the first object: fine at 0.5, refused at 0.9.
    accepted = scene.try_paint(10, 6, _square(20), None, second, min_visible)
    assert accepted == (min_visible == 0.5)
    assert first.visible == (260 if accepted else 400)
