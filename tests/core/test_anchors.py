"""Default boxes: count, hand-computed values, and bit-equality with the reference dboxes300_coco()."""

from __future__ import annotations

from math import sqrt

import pytest
import torch
from ssd_core.anchors import BOXES_PER_LOCATION, NUM_ANCHORS, default_boxes

from tests.helpers import mlperf_reference as ref

# First anchor index of each level: 38²·4, +19²·6, +10²·6, +5²·6, +3²·4, +1²·4.
LEVEL_START = [0, 5776, 7942, 8542, 8692, 8728]


def test_count_and_layout() -> None:
    assert NUM_ANCHORS == 8732
    assert BOXES_PER_LOCATION == (4, 6, 6, 6, 4, 4)
    for order in ("xywh", "ltrb"):
        boxes = default_boxes(order)
        assert boxes.shape == (8732, 4)
        assert boxes.dtype == torch.float32


def test_equal_to_reference_bit_for_bit() -> None:
    ref_xywh, ref_ltrb = ref.dboxes300()
    assert torch.equal(default_boxes("xywh", dtype=torch.float64), ref_xywh)
    assert torch.equal(default_boxes("ltrb", dtype=torch.float64), ref_ltrb)
    assert torch.equal(default_boxes("xywh"), ref_xywh.float())
    assert torch.equal(default_boxes("ltrb"), ref_ltrb.float())


def _xywh(index: int) -> list[float]:
    return default_boxes("xywh", dtype=torch.float64)[index].tolist()


def _ltrb(index: int) -> list[float]:
    return default_boxes("ltrb", dtype=torch.float64)[index].tolist()


def test_hand_computed_values() -> None:
    # Level 0 (f = 300/8 = 37.5), first size 21/300 = 0.07: centre (0.5/37.5, 0.5/37.5).
    assert _xywh(0) == pytest.approx([1 / 75, 1 / 75, 0.07, 0.07], abs=1e-15)
    # ltrb is not clamped again: left = 1/75 - 0.035 < 0.
    assert _ltrb(0) == pytest.approx(
        [1 / 75 - 0.035, 1 / 75 - 0.035, 1 / 75 + 0.035, 1 / 75 + 0.035]
    )
    assert _ltrb(0)[0] < 0
    # Column varies fastest, then row: index 1 is (col 1, row 0), index 38 is (col 0, row 1).
    assert _xywh(1)[:2] == pytest.approx([1.5 / 37.5, 1 / 75])
    assert _xywh(38)[:2] == pytest.approx([1 / 75, 1.5 / 37.5])
    # The last column of the 38x38 level sits exactly at 37.5/37.5 = 1.0.
    assert _xywh(37)[0] == 1.0
    # Second size of level 0: sqrt(0.07 * 0.15); third: 0.07*sqrt(2) x 0.07/sqrt(2); fourth: swapped.
    assert _xywh(1444)[2:] == pytest.approx([sqrt(0.07 * 0.15)] * 2)
    assert _xywh(2 * 1444)[2:] == pytest.approx([0.07 * sqrt(2), 0.07 / sqrt(2)])
    assert _xywh(3 * 1444)[2:] == pytest.approx([0.07 / sqrt(2), 0.07 * sqrt(2)])
    # Level 1 starts at 5776 with 45/300 = 0.15 and centre 0.5/18.75.
    assert _xywh(5776) == pytest.approx([0.5 / 18.75, 0.5 / 18.75, 0.15, 0.15])
    # Level 1, aspect ratio 3 (sizes 5 and 6 of the level): 0.15*sqrt(3) x 0.15/sqrt(3).
    assert _xywh(5776 + 4 * 361)[2:] == pytest.approx([0.15 * sqrt(3), 0.15 / sqrt(3)])
    # Level 2 (f = 9.375): the last column's centre 9.5/9.375 = 1.0133 is clamped to 1.0.
    assert _xywh(7942 + 9) == pytest.approx([1.0, 0.5 / 9.375, 0.33, 0.33])
    # Level 5: one location at (0.5, 0.5); sizes 0.87, sqrt(0.87*1.05), 0.87*sqrt(2) clamped to 1.
    assert _xywh(8728) == pytest.approx([0.5, 0.5, 0.87, 0.87])
    assert _xywh(8729)[2:] == pytest.approx([sqrt(0.87 * 1.05)] * 2)
    assert _xywh(8730) == pytest.approx([0.5, 0.5, 1.0, 0.87 / sqrt(2)])
    assert _xywh(8731) == pytest.approx([0.5, 0.5, 0.87 / sqrt(2), 1.0])
    assert _ltrb(8731) == pytest.approx([0.5 - 0.87 / sqrt(8), 0.0, 0.5 + 0.87 / sqrt(8), 1.0])


def test_level_starts_and_sizes() -> None:
    xywh = default_boxes("xywh", dtype=torch.float64)
    scales = [21, 45, 99, 153, 207, 261]
    for start, scale in zip(LEVEL_START, scales, strict=True):
        assert xywh[start, 2].item() == pytest.approx(min(scale / 300, 1.0))
    assert xywh.min().item() >= 0.0
    assert xywh.max().item() <= 1.0


def test_dtype_device_and_fresh_copy() -> None:
    a = default_boxes("ltrb", dtype=torch.bfloat16, device="cpu")
    assert a.dtype == torch.bfloat16
    a.zero_()  # the result is a copy: mutating it must not change later calls
    assert default_boxes("ltrb").abs().sum() > 0
    with pytest.raises(ValueError, match="order"):
        default_boxes("cxcywh")  # type: ignore[arg-type]
