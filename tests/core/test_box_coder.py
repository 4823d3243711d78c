"""Batched matching/encoding against the reference Encoder.encode applied image by image; decode."""

from __future__ import annotations

import pytest
import torch
from ssd_core.anchors import default_boxes
from ssd_core.box_coder import decode, encode

from tests.helpers import mlperf_reference as ref


def _check_against_reference(boxes: torch.Tensor, labels: torch.Tensor) -> None:
    loc_targets, label_targets = encode(boxes, labels)
    assert loc_targets.shape == (boxes.shape[0], 8732, 4)
    assert loc_targets.dtype == torch.float32
    assert label_targets.shape == (boxes.shape[0], 8732)
    assert label_targets.dtype == torch.int64
    for i in range(boxes.shape[0]):
        real = labels[i] > 0
        ref_loc, ref_labels = ref.encode_image(boxes[i][real], labels[i][real])
        assert torch.equal(label_targets[i], ref_labels), f"labels differ for image {i}"
        pos = ref_labels > 0
        assert torch.equal(loc_targets[i][pos], ref_loc[pos].float()), f"offsets differ, image {i}"
        # Background anchors carry the anchor itself: offset 0 (the reference's is 0 up to rounding).
        assert torch.equal(loc_targets[i][~pos], torch.zeros_like(loc_targets[i][~pos]))
        assert ref_loc[~pos].abs().max() < 1e-6


def test_random_batches_match_reference(generator) -> None:
    for counts in ([0, 1, 3, 7, 12, 5], [12, 12, 2, 9, 0, 4]):
        boxes, labels = ref.random_ground_truth(generator, n=6, m=12, counts=counts)
        _check_against_reference(boxes, labels)


def test_image_without_boxes_is_all_background(generator) -> None:
    boxes, labels = ref.random_ground_truth(generator, n=2, m=4, counts=[0, 0])
    loc_targets, label_targets = encode(boxes, labels)
    assert not label_targets.any()
    assert not loc_targets.any()


def test_one_box() -> None:
    boxes = torch.tensor([[[0.2, 0.3, 0.6, 0.8]]])
    labels = torch.tensor([[7]])
    _check_against_reference(boxes, labels)
    _, label_targets = encode(boxes, labels)
    # A large box matches several anchors above 0.5, all with its label.
    assert (label_targets == 7).sum() > 1
    assert set(label_targets.unique().tolist()) == {0, 7}


def test_boxes_smaller_than_every_anchor() -> None:
    # 4x4-pixel boxes: IoU with any anchor < 0.5, so only best-anchor forcing makes positives.
    boxes = torch.tensor([[[0.10, 0.10, 0.113, 0.113], [0.70, 0.40, 0.712, 0.41], [0, 0, 0, 0]]])
    labels = torch.tensor([[3, 5, 0]])
    _check_against_reference(boxes, labels)
    _, label_targets = encode(boxes, labels)
    assert (label_targets == 3).sum() == 1
    assert (label_targets == 5).sum() == 1
    # The forced anchor is the box's best-IoU anchor (independent IoU from the reference formula).
    _, ref_ltrb = ref.dboxes300()
    ious = ref.calc_iou(boxes[0, :2].double(), ref_ltrb)
    assert label_targets[0, ious[0].argmax()] == 3
    assert label_targets[0, ious[1].argmax()] == 5


def test_overlapping_boxes_compete_for_one_anchor() -> None:
    # Two identical tiny boxes share the same best anchor: the later ground truth wins it.
    box = [0.40, 0.40, 0.41, 0.41]
    boxes = torch.tensor([[box, box, [0.5, 0.5, 0.9, 0.9]], [box, [0.40, 0.40, 0.412, 0.411], box]])
    labels = torch.tensor([[11, 22, 33], [44, 55, 66]])
    _check_against_reference(boxes, labels)
    _, label_targets = encode(boxes, labels)
    assert (label_targets[0] == 11).sum() == 0
    assert (label_targets[0] == 22).sum() == 1
    assert (label_targets[1] == 44).sum() == 0
    assert (label_targets[1] == 66).sum() == 1


def test_padding_position_does_not_matter(generator) -> None:
    boxes, labels = ref.random_ground_truth(generator, n=1, m=6, counts=[6])
    labels[0, 2] = 0  # padding in the middle: same result as the compacted list
    loc_a, lab_a = encode(boxes, labels)
    keep = labels[0] > 0
    loc_b, lab_b = encode(boxes[:, keep], labels[:, keep])
    assert torch.equal(lab_a, lab_b)
    assert torch.equal(loc_a, loc_b)


def test_float32_compute_equals_float64(generator) -> None:
    # The float32 IoU matrix only screens candidates; decisions are taken on float64 re-scored
    # IoUs and the offsets are formed in float64, so both settings return the same tensors.
    boxes, labels = ref.random_ground_truth(generator, n=4, m=8)
    loc64, lab64 = encode(boxes, labels, compute_dtype=torch.float64)
    loc32, lab32 = encode(boxes, labels)  # float32 is the default
    assert torch.equal(lab32, lab64)
    assert torch.equal(loc32, loc64)


def test_round_trip_on_positives(generator) -> None:
    boxes, labels = ref.random_ground_truth(generator, n=4, m=10, counts=[10, 3, 1, 6])
    loc_targets, label_targets = encode(boxes, labels)
    decoded = decode(loc_targets)
    assert decoded.dtype == torch.float32
    # Recover each positive anchor's matched box independently: the box with its label and best IoU.
    _, ref_ltrb = ref.dboxes300()
    for i in range(4):
        pos = (label_targets[i] > 0).nonzero().squeeze(1)
        assert pos.numel() > 0
        ious = ref.calc_iou(boxes[i].double(), ref_ltrb[pos])  # [M, P]
        ious[labels[i] == 0] = -1
        candidates = boxes[i][ious.argmax(dim=0)]
        err = (decoded[i, pos] - candidates).abs().amax(dim=1)
        # Forced anchors may belong to a box that is not their best; they must still decode to
        # one of the image's boxes.
        for a, e in zip(pos.tolist(), err.tolist(), strict=True):
            if e > 1e-5:
                assert ((decoded[i, a] - boxes[i][labels[i] > 0]).abs().amax(dim=1) < 1e-5).any()


def test_decode_matches_reference_scale_back(generator) -> None:
    loc = torch.randn(2, 8732, 4, generator=generator)
    dboxes_xywh = default_boxes("xywh", dtype=torch.float64).unsqueeze(0)
    # Reference scale_back_batch (box part), in place on a float32 copy, as the reference does.
    b = loc.clone()
    b[:, :, :2] = 0.1 * b[:, :, :2]
    b[:, :, 2:] = 0.2 * b[:, :, 2:]
    b[:, :, :2] = b[:, :, :2] * dboxes_xywh[:, :, 2:] + dboxes_xywh[:, :, :2]
    b[:, :, 2:] = b[:, :, 2:].exp() * dboxes_xywh[:, :, 2:]
    expected = torch.stack(
        (
            b[:, :, 0] - 0.5 * b[:, :, 2],
            b[:, :, 1] - 0.5 * b[:, :, 3],
            b[:, :, 0] + 0.5 * b[:, :, 2],
            b[:, :, 1] + 0.5 * b[:, :, 3],
        ),
        dim=-1,
    )
    assert torch.equal(decode(loc), expected)
    # Zero offsets decode to the default boxes themselves.
    torch.testing.assert_close(decode(torch.zeros(1, 8732, 4))[0], default_boxes("ltrb"))
    # bf16 input decodes in float32.
    assert decode(loc.bfloat16()).dtype == torch.float32


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[N, M, 4\]"):
        encode(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="gt_labels"):
        encode(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        encode(torch.zeros(2, 3, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="8732"):
        decode(torch.zeros(1, 100, 4))
