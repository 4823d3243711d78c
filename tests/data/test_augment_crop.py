"""SSD random crop: the reference's rules draw for draw, and the geometric guarantees."""

from __future__ import annotations

import numpy as np
import pytest
from ssd_data.samples.crop import CROP_OPTIONS, crop_pixels, flip_boxes, sample_crop


def _reference_crop(boxes: np.ndarray, rng: np.random.Generator, attempts: int):
    """The reference SSDCropping transcribed from mlperf-ssd-v0.7.md 3.2 (same draw order:
    option, then per attempt w, h, [left, top]); returns (rect or None, kept boxes)."""
    options = [None, (0.1, None), (0.3, None), (0.5, None), (0.7, None), (0.9, None), (None, None)]
    while True:
        mode = options[int(rng.integers(7))]
        if mode is None:
            return None, boxes
        min_iou = -np.inf if mode[0] is None else mode[0]
        for _ in range(attempts):
            w, h = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
            if w / h < 0.5 or w / h > 2:
                continue
            left, top = rng.uniform(0, 1.0 - w), rng.uniform(0, 1.0 - h)
            right, bottom = left + w, top + h
            ious = []
            for b in boxes:
                iw = max(0.0, min(b[2], right) - max(b[0], left))
                ih = max(0.0, min(b[3], bottom) - max(b[1], top))
                inter = iw * ih
                union = (b[2] - b[0]) * (b[3] - b[1]) + w * h - inter
                ious.append(inter / union)
            if not all(iou > min_iou for iou in ious):
                continue
            kept = []
            for b in boxes:
                xc, yc = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
                if left < xc < right and top < yc < bottom:
                    kept.append(
                        [
                            (min(max(b[0], left), right) - left) / w,
                            (min(max(b[1], top), bottom) - top) / h,
                            (min(max(b[2], left), right) - left) / w,
                            (min(max(b[3], top), bottom) - top) / h,
                        ]
                    )
            if not kept:
                continue
            return (left, top, right, bottom), np.array(kept)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 0.8, (n, 2))
    wh = rng.uniform(0.02, 0.5, (n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, 1.0)], axis=1).astype(np.float32)


@pytest.mark.parametrize("attempts", [1, 50])
def test_matches_reference_transcription_draw_for_draw(attempts: int) -> None:
    gen = np.random.default_rng(123)
    for case in range(300):
        boxes = _random_boxes(gen, int(gen.integers(1, 6)))
        ours = sample_crop(boxes, np.random.default_rng([case, attempts]), attempts)
        rect, kept = _reference_crop(
            boxes.astype(np.float64), np.random.default_rng([case, attempts]), attempts
        )
        if rect is None:
            assert ours.rect is None
            np.testing.assert_array_equal(ours.boxes, boxes)
        else:
            np.testing.assert_allclose(ours.rect, rect, rtol=0, atol=1e-12)
            np.testing.assert_allclose(ours.boxes, kept, rtol=0, atol=1e-6)


def test_geometry_rules_hold_over_many_draws() -> None:
    gen = np.random.default_rng(7)
    seen = np.zeros(len(CROP_OPTIONS), int)
    for case in range(3000):
        if case % 2:
            boxes = _random_boxes(gen, int(gen.integers(1, 5)))
        else:  # one large box, so that the high IoU options succeed too
            lo = gen.uniform(0, 0.1, 2)
            boxes = np.array([[lo[0], lo[1], lo[0] + 0.9, lo[1] + 0.9]], np.float32)
        res = sample_crop(boxes, np.random.default_rng(case), 1)
        seen[res.option] += 1
        assert res.boxes.dtype == np.float32 and len(res.boxes) == res.keep.sum() >= 1
        assert np.all(res.boxes >= 0) and np.all(res.boxes <= 1)
        if res.rect is None:
            continue
        left, top, right, bottom = res.rect
        w, h = right - left, bottom - top
        assert 0.3 <= w <= 1 and 0.3 <= h <= 1 and 0.5 <= w / h <= 2
        assert left >= 0 and right <= 1 + 1e-12 and top >= 0 and bottom <= 1 + 1e-12
        # min-IoU constraint against EVERY box (IoU computed here independently)
        iw = np.clip(np.minimum(boxes[:, 2], right) - np.maximum(boxes[:, 0], left), 0, None)
        ih = np.clip(np.minimum(boxes[:, 3], bottom) - np.maximum(boxes[:, 1], top), 0, None)
        iou = (
            iw * ih / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + w * h - iw * ih)
        )
        min_iou = CROP_OPTIONS[res.option]
        assert np.all(iou > min_iou)
        # centre rule
        xc, yc = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        np.testing.assert_array_equal(
            res.keep, (xc > left) & (xc < right) & (yc > top) & (yc < bottom)
        )
    # Every option occurs; "keep the original" is drawn 1/7 of the time at first, and more
    # often in the end because failed options are redrawn.
    assert np.all(seen > 0)
    assert seen[0] / seen.sum() > 1 / 7 - 0.02


def test_keep_probability_with_redraws_matches_the_rule() -> None:
    # A tiny box in the centre has IoU ~0 with any crop, so only "keep" and "no constraint"
    # can end the loop; options are drawn uniformly and redrawn after a failed attempt, so
    # P(keep) = (1/7) / (1/7 + q/7) = 1 / (1 + q), q = P(one no-constraint attempt succeeds).
    box = np.array([[0.499, 0.499, 0.501, 0.501]], np.float32)
    outcomes = [sample_crop(box, np.random.default_rng(s), 1).option for s in range(4000)]
    assert set(outcomes) <= {0, 6}
    # P(no-constraint attempt succeeds) = P(aspect ok and centre inside), estimated here:
    gen = np.random.default_rng(99)
    w, h = gen.uniform(0.3, 1, 200000), gen.uniform(0.3, 1, 200000)
    ok = (w / h >= 0.5) & (w / h <= 2)
    left, top = gen.uniform(0, 1, 200000) * (1 - w), gen.uniform(0, 1, 200000) * (1 - h)
    ok &= (left < 0.5) & (left + w > 0.5) & (top < 0.5) & (top + h > 0.5)
    q = ok.mean()
    # keep wins if drawn before a successful no-constraint attempt: (1/7) / (1/7 + q/7)
    expected_keep = 1 / (1 + q)
    assert abs(np.mean(np.array(outcomes) == 0) - expected_keep) < 0.03


def test_no_boxes_keeps_the_image() -> None:
    res = sample_crop(np.zeros((0, 4), np.float32), np.random.default_rng(0), 1)
    assert res.rect is None and res.boxes.shape == (0, 4)


def test_flip_and_pixel_crop() -> None:
    boxes = np.array([[0.1, 0.2, 0.4, 0.5]], np.float32)
    np.testing.assert_allclose(flip_boxes(boxes), [[0.6, 0.2, 0.9, 0.5]], atol=1e-7)
    np.testing.assert_allclose(flip_boxes(flip_boxes(boxes)), boxes, atol=1e-7)
    assert crop_pixels((0.25, 0.5, 0.75, 1.0), 640, 480) == (160, 240, 480, 480)
    assert crop_pixels((0.5, 0.5, 0.5001, 0.5001), 10, 10) == (5, 5, 6, 6)
