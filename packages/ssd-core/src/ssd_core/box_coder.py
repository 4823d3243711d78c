"""Batched SSD matching and box coding (reference ``Encoder.encode`` + ``Loss._loc_vec``, ``scale_back_batch``).

Everything here works on padded, fixed-shape batches with no Python loop over images and no host
sync, so ``encode`` can run on the device inside a ``torch.compile``-d training step.

Precision: the reference's default boxes are float64 tensors, so its IoUs and offsets are computed
in float64. ``encode`` does the same by default (``compute_dtype``), which makes its matching
decisions (IoU > 0.5, arg-max ties) identical to the reference's; the returned targets are float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssd_core.anchors import NUM_ANCHORS, SCALE_WH, SCALE_XY, default_boxes

_FORCED_IOU = 2.0  # IoU given to each ground truth's best anchor (best-prior forcing)
_PADDING_IOU = -1.0  # IoU of padding rows: below any real IoU, so padding never matches


def _anchors(order: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Default boxes [A, 4] on ``device`` in ``dtype``; cached per (order, dtype, device) in eager mode."""
    if torch.compiler.is_compiling():
        return default_boxes(order, dtype=dtype, device=device)  # type: ignore[arg-type]
    key = (order, dtype, device)
    cached = _ANCHOR_CACHE.get(key)
    if cached is None:
        cached = default_boxes(order, dtype=dtype, device=device)  # type: ignore[arg-type]
        _ANCHOR_CACHE[key] = cached
    return cached


_ANCHOR_CACHE: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}


def batched_box_iou(boxes: Tensor, anchors: Tensor) -> Tensor:
    """IoU of every box of every image with every anchor.

    Args:
        boxes: [N, M, 4] ltrb.
        anchors: [A, 4] ltrb, same dtype as ``boxes``.

    Returns:
        [N, M, A] IoU in the inputs' dtype, computed with the reference's operation order
        (``inter / (area_box + area_anchor - inter)``).
    """
    bl, bt, br, bb = (c.unsqueeze(-1) for c in boxes.unbind(dim=-1))  # [N, M, 1]
    al, at, ar, ab = anchors.unbind(dim=-1)  # [A]
    inter_w = (torch.minimum(br, ar) - torch.maximum(bl, al)).clamp(min=0)
    inter_h = (torch.minimum(bb, ab) - torch.maximum(bt, at)).clamp(min=0)
    inter = inter_w * inter_h
    area_box = (br - bl) * (bb - bt)
    area_anchor = (ar - al) * (ab - at)
    return inter / (area_box + area_anchor - inter)


def _check_ground_truth(gt_boxes: Tensor, gt_labels: Tensor) -> None:
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(
            f"encode: gt_boxes must be [N, M, 4] ltrb, got shape {tuple(gt_boxes.shape)}"
        )
    if gt_labels.shape != gt_boxes.shape[:2]:
        raise ValueError(
            f"encode: gt_labels must be [N, M] matching gt_boxes {tuple(gt_boxes.shape)}, "
            f"got {tuple(gt_labels.shape)}"
        )
    if not gt_boxes.is_floating_point():
        raise TypeError(f"encode: gt_boxes must be a float tensor, got {gt_boxes.dtype}")
    if gt_labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"encode: gt_labels must be int64 (0 = padding), got {gt_labels.dtype}")


def encode(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    iou_threshold: float = 0.5,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Match ground truth to the 8732 default boxes and encode regression targets.

    Reference semantics (``Encoder.encode`` then ``Loss._loc_vec``), per image:
    each anchor takes its best ground truth (first index on ties); each ground truth's best anchor
    (first anchor on ties) is forced to IoU 2.0 and assigned to it (when two ground truths share a
    best anchor, the later one wins, as the reference's indexed assignment does); anchors with
    IoU > ``iou_threshold`` (strict) are positive and take the matched label, all others are 0.

    Args:
        gt_boxes: float [N, M, 4], ltrb normalised to [0, 1]. Rows whose label is 0 are padding
            and never match. Real boxes must have positive width and height (a zero-size box
            forced onto its best anchor gives an infinite log-size target, as in the reference).
        gt_labels: int64 [N, M], contiguous labels 1..C-1, 0 = padding. An image may have no box.
        iou_threshold: strict positive threshold (0.5).
        compute_dtype: dtype of the IoU and offset arithmetic (float64 = the reference's).

    Returns:
        ``(loc_targets, label_targets)``: float32 [N, A, 4] offsets
        ``((g_cxy - a_cxy) / a_wh / 0.1, log(g_wh / a_wh) / 0.2)`` (exactly 0 for background
        anchors) and int64 [N, A] labels (0 = background).
    """
    _check_ground_truth(gt_boxes, gt_labels)
    n, m = gt_labels.shape
    device = gt_boxes.device
    anchors_ltrb = _anchors("ltrb", compute_dtype, device)
    anchors_xywh = _anchors("xywh", compute_dtype, device)
    boxes = gt_boxes.to(compute_dtype)
    labels = gt_labels.long()
    valid = labels > 0  # [N, M]

    iou = batched_box_iou(boxes, anchors_ltrb).masked_fill(~valid.unsqueeze(-1), _PADDING_IOU)
    best_gt_iou, best_gt_idx = iou.max(dim=1)  # [N, A]: best ground truth of each anchor
    best_anchor_idx = iou.argmax(dim=2)  # [N, M]: best anchor of each ground truth

    # Best-prior forcing. scatter-amax of the gt index makes the later gt win a shared anchor.
    gt_index = torch.arange(m, device=device).expand(n, m)
    forced_gt = torch.full((n, NUM_ANCHORS), -1, dtype=torch.int64, device=device)
    forced_gt = forced_gt.scatter_reduce(
        1, best_anchor_idx, torch.where(valid, gt_index, -1), reduce="amax", include_self=True
    )
    forced = forced_gt >= 0
    best_gt_idx = torch.where(forced, forced_gt, best_gt_idx)
    best_gt_iou = torch.where(forced, torch.full_like(best_gt_iou, _FORCED_IOU), best_gt_iou)
    positive = best_gt_iou > iou_threshold  # [N, A]

    label_targets = torch.where(positive, labels.gather(1, best_gt_idx), 0)
    matched = boxes.gather(1, best_gt_idx.unsqueeze(-1).expand(n, NUM_ANCHORS, 4))  # [N, A, 4]
    matched = torch.where(positive.unsqueeze(-1), matched, anchors_ltrb)  # background: the anchor
    left, top, right, bottom = matched.unbind(dim=-1)
    centre = torch.stack((0.5 * (left + right), 0.5 * (top + bottom)), dim=-1)
    size = torch.stack((right - left, bottom - top), dim=-1)
    a_centre, a_size = anchors_xywh[:, :2], anchors_xywh[:, 2:]
    offset_xy = (1.0 / SCALE_XY) * (centre - a_centre) / a_size
    offset_wh = (1.0 / SCALE_WH) * (size / a_size).log()
    offsets = torch.cat((offset_xy, offset_wh), dim=-1)
    loc_targets = torch.where(positive.unsqueeze(-1), offsets, 0.0).to(torch.float32)
    return loc_targets, label_targets


def decode(loc: Tensor) -> Tensor:
    """Turn predicted offsets into boxes (reference ``scale_back_batch``, box part).

    ``cxy = 0.1 * loc_xy * a_wh + a_cxy``, ``wh = exp(0.2 * loc_wh) * a_wh``, then ltrb. Like the
    reference, the centre and size are formed against the float64 default boxes and rounded to
    the output dtype before the ltrb conversion.

    Args:
        loc: float [N, A, 4] predicted offsets (any float dtype, e.g. bf16 from autocast).

    Returns:
        float32 [N, A, 4] ltrb boxes, normalised (not clipped), float64 if ``loc`` is float64.
    """
    if loc.dim() != 3 or loc.shape[1:] != (NUM_ANCHORS, 4):
        raise ValueError(f"decode: loc must be [N, {NUM_ANCHORS}, 4], got {tuple(loc.shape)}")
    out_dtype = torch.promote_types(loc.dtype, torch.float32)
    loc = loc.to(out_dtype)
    anchors_xywh = _anchors("xywh", torch.float64, loc.device)
    a_centre, a_size = anchors_xywh[:, :2], anchors_xywh[:, 2:]
    centre = (SCALE_XY * loc[..., :2] * a_size + a_centre).to(out_dtype)
    size = ((SCALE_WH * loc[..., 2:]).exp() * a_size).to(out_dtype)
    return torch.cat((centre - 0.5 * size, centre + 0.5 * size), dim=-1)


class BoxCoder:
    """Object form of :func:`encode` / :func:`decode` with the matching threshold bound.

    Args:
        iou_threshold: strict IoU threshold for positive anchors (0.5).
        compute_dtype: dtype of the matching arithmetic (float64 = reference; float32 is faster
            on devices with slow float64 and may differ on IoU ties at the 1e-7 level).
    """

    def __init__(self, iou_threshold: float = 0.5, compute_dtype: torch.dtype = torch.float64):
        self.iou_threshold = iou_threshold
        self.compute_dtype = compute_dtype

    def encode(self, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
        """See :func:`encode`: [N, M, 4] ltrb, [N, M] -> float32 [N, A, 4], int64 [N, A]."""
        return encode(gt_boxes, gt_labels, self.iou_threshold, self.compute_dtype)

    def decode(self, loc: Tensor) -> Tensor:
        """See :func:`decode`: [N, A, 4] offsets -> float32 [N, A, 4] ltrb."""
        return decode(loc)
