"""encode's matching on IoU ties and near-ties, float32 and float64, against a loop written from the spec.

The golden matching comes from :func:`_spec_labels`: spec section 2.2 written as plain Python loops
over the reference-formula IoUs in float64 (``ref.calc_iou``, the conftest transcription), with
the reference's tie rules made explicit (first index wins an arg-max; the later ground truth wins
an anchor forced by two). Each tie case also checks that float32 IoUs alone would have decided
differently, so the case really exercises the float64 re-scoring.
"""

from __future__ import annotations

import pytest
import torch
from ssd_core.box_coder import GT_CANDIDATES, encode, transient_bytes_per_image

from tests.helpers import mlperf_reference as ref

DTYPES = [torch.float32, torch.float64]


def _spec_labels(boxes: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """Spec 2.2 for one image: real boxes float32 [M, 4] ltrb, labels [M] -> label of each anchor."""
    _, dboxes = ref.dboxes300()
    ious = ref.calc_iou(boxes.double(), dboxes).tolist()  # [M][A], reference formula, float64
    m, a = len(ious), len(ious[0])
    best_gt, best_iou = [0] * a, [ious[0][j] for j in range(a)]
    for j in range(a):  # step 2: best ground truth of each anchor, first index on ties
        for g in range(1, m):
            if ious[g][j] > best_iou[j]:
                best_gt[j], best_iou[j] = g, ious[g][j]
    for g in range(m):  # step 3: best anchor of each ground truth (first on ties), forced
        best_anchor = 0
        for j in range(1, a):
            if ious[g][j] > ious[g][best_anchor]:
                best_anchor = j
        best_gt[best_anchor], best_iou[best_anchor] = g, 2.0  # a later g overwrites
    return [int(labels[best_gt[j]]) if best_iou[j] > 0.5 else 0 for j in range(a)]


def _check(boxes: torch.Tensor, labels: torch.Tensor) -> None:
    """encode (both dtypes) equals the spec loop's labels and the reference's offsets; same tensors."""
    outs = [encode(boxes, labels, compute_dtype=dtype) for dtype in DTYPES]
    for i in range(boxes.shape[0]):
        real = labels[i] > 0
        want = _spec_labels(boxes[i][real], labels[i][real])
        ref_loc, ref_labels = ref.encode_image(boxes[i][real], labels[i][real])
        assert ref_labels.tolist() == want  # the two golden computations agree
        pos = ref_labels > 0
        for dtype, (loc, lab) in zip(DTYPES, outs, strict=True):
            assert lab[i].tolist() == want, f"{dtype}: labels differ from the spec, image {i}"
            assert torch.equal(loc[i][pos], ref_loc[pos].float()), f"{dtype}: offsets, image {i}"
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def _naive_float32_best_anchor(boxes: torch.Tensor) -> torch.Tensor:
    """Per-box arg-max over anchors of float32 IoUs (what a plain float32 encode would force)."""
    _, dboxes = ref.dboxes300()
    return ref.calc_iou(boxes.float(), dboxes.float()).argmax(dim=1)


def _reference_best_anchor(boxes: torch.Tensor) -> torch.Tensor:
    _, dboxes = ref.dboxes300()
    return ref.calc_iou(boxes.double(), dboxes).argmax(dim=1)


def test_ground_truth_equally_best_for_many_anchors() -> None:
    # Boxes smaller than every anchor lie inside up to ~25 same-area anchors: all have the same
    # IoU in exact arithmetic; float64 rounding of the anchor areas picks the reference's winner.
    boxes = torch.tensor(
        [
            [[0.10, 0.10, 0.113, 0.113], [0.70, 0.40, 0.712, 0.41]],
            [[0.33, 0.61, 0.34, 0.615], [0.5, 0.5, 0.505, 0.505]],
        ]
    )
    labels = torch.tensor([[3, 5], [9, 4]])
    flat = boxes.view(-1, 4)
    assert (_naive_float32_best_anchor(flat) != _reference_best_anchor(flat)).any()
    _check(boxes, labels)


def test_box_centred_between_two_anchors() -> None:
    # A box centred half-way between two horizontally adjacent level-0 anchors (same size):
    # exact-arithmetic tie between the two for the box's best anchor.
    xywh, _ = ref.dboxes300()
    rows = []
    for a in (0, 100, 700, 1400):  # level 0, first size: anchors a and a + 1 are neighbours
        cx = 0.5 * (xywh[a, 0] + xywh[a + 1, 0])
        w, h, cy = xywh[a, 2], xywh[a, 3], xywh[a, 1]
        rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    boxes = torch.tensor(rows).float().view(2, 2, 4)
    _check(boxes, torch.tensor([[1, 2], [3, 4]]))


def test_two_ground_truths_with_equal_iou_to_anchors() -> None:
    # Mirror images about x = 0.5 and y = 0.5 (dyadic coordinates, so exactly symmetric): the
    # anchors centred on an axis (the level-5 ones, the middle of odd grids) see two or four
    # boxes with equal IoU in exact arithmetic.
    pairs = [
        [[0.125, 0.125, 0.75, 0.875], [0.25, 0.125, 0.875, 0.875], [0, 0, 0, 0], [0, 0, 0, 0]],
        [
            [0.1875, 0.3125, 0.4375, 0.625],
            [0.5625, 0.3125, 0.8125, 0.625],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ],
        [
            [0.125, 0.1875, 0.625, 0.5625],
            [0.375, 0.1875, 0.875, 0.5625],
            [0.125, 0.4375, 0.625, 0.8125],
            [0.375, 0.4375, 0.875, 0.8125],
        ],
    ]
    labels = torch.tensor([[1, 2, 0, 0], [3, 4, 0, 0], [5, 6, 7, 8]])
    _check(torch.tensor(pairs), labels)


@pytest.mark.parametrize("copies", [2, GT_CANDIDATES + 2])
def test_duplicate_ground_truth_boxes(copies: int) -> None:
    # Identical boxes with different labels: every anchor takes the first copy, the shared best
    # anchor goes to the last copy (more copies than the float32 screen keeps candidates).
    box = [0.3, 0.2, 0.7, 0.75]
    boxes = torch.tensor([[box] * copies + [[0.05, 0.05, 0.2, 0.3]]])
    labels = torch.arange(1, copies + 2).unsqueeze(0)
    _check(boxes, labels)
    for dtype in DTYPES:
        _, lab = encode(boxes, labels, compute_dtype=dtype)
        counts = torch.bincount(lab[0], minlength=copies + 2)
        assert counts[1] > 1 and counts[copies] == 1  # first copy: threshold; last: forced
        assert not counts[2:copies].any()


def test_boxes_on_the_threshold(generator) -> None:
    # Each image has one box: the left or top half of an anchor, so its IoU with that anchor is
    # 0.5 in exact arithmetic and ~0.5 +- 1e-8 after rounding; IoU > 0.5 is decided in float64.
    _, dboxes = ref.dboxes300()
    idx = torch.randint(0, 8732, (48,), generator=generator)
    b = dboxes[idx].clone()
    b[:24, 2] = 0.5 * (b[:24, 0] + b[:24, 2])
    b[24:, 3] = 0.5 * (b[24:, 1] + b[24:, 3])
    b = b.clamp(0, 1).float()
    iou64 = ref.calc_iou(b.double(), dboxes)[torch.arange(48), idx]
    iou32 = ref.calc_iou(b, dboxes.float())[torch.arange(48), idx]
    assert ((iou64 > 0.5) != (iou32 > 0.5)).sum() >= 5  # float32 alone would decide otherwise
    _check(b.unsqueeze(1), torch.randint(1, 81, (48, 1), generator=generator))


def test_random_batches_float32_equals_float64(generator) -> None:
    boxes, labels = ref.random_ground_truth(generator, n=16, m=20)
    a = encode(boxes, labels, compute_dtype=torch.float32)
    b = encode(boxes, labels, compute_dtype=torch.float64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunked_equals_unchunked(generator, dtype: torch.dtype) -> None:
    boxes, labels = ref.random_ground_truth(generator, n=7, m=9)
    whole = encode(boxes, labels, compute_dtype=dtype, max_transient_bytes=None)
    per_image = transient_bytes_per_image(9, dtype)
    for budget in (1, 3 * per_image):  # chunks of 1 image, and of 3 (7 = 3 + 3 + 1)
        part = encode(boxes, labels, compute_dtype=dtype, max_transient_bytes=budget)
        assert torch.equal(part[0], whole[0]) and torch.equal(part[1], whole[1])


def test_transient_estimate_and_bad_dtype() -> None:
    # float32 halves the dominant [M, A] term; at M = 128, 256 images no longer fit one GiB.
    f32 = transient_bytes_per_image(128, torch.float32)
    f64 = transient_bytes_per_image(128, torch.float64)
    assert 3 * 128 * 8732 * 4 < f32 < f64 < 2 * f32
    assert 256 * f32 > 2**30
    with pytest.raises(ValueError, match="compute_dtype"):
        encode(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.int64), compute_dtype=torch.half)
