"""Batched SSD matching and box coding (reference ``Encoder.encode`` + ``Loss._loc_vec``, ``scale_back_batch``).

Everything here works on padded, fixed-shape batches with no Python loop over images and no host
sync, so ``encode`` can run on the device inside a ``torch.compile``-d training step.

Precision: the reference's default boxes are float64 tensors, so its IoUs and offsets are computed
in float64, and where two IoUs are equal in exact arithmetic the float64 rounding decides the
arg-max. ``encode`` reproduces those decisions in both settings of ``compute_dtype``:

- ``float64``: the whole [N, M, 8732] IoU matrix in float64, exactly the reference's arithmetic;
- ``float32`` (default): the IoU matrix in float32 only *screens* candidates (the best
  ``ANCHOR_CANDIDATES`` anchors of each ground truth, the best ``GT_CANDIDATES`` ground truths of
  each anchor); those few are re-scored in float64 with the reference's formula, and the arg-max,
  ties (first index on exact float64 ties) and the 0.5 threshold are decided on the float64 values.
  The result equals the float64 setting unless more than that many candidates lie within float32
  rounding (~1e-6 relative) of the best one.

The offsets are always computed in float64 and returned as float32, so both settings return the
same tensors whenever they match the same way. The batch is processed in chunks of a fixed number
of images so that the working memory stays under ``max_transient_bytes``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssd_core.anchors import NUM_ANCHORS, SCALE_WH, SCALE_XY, default_boxes

_FORCED_IOU = 2.0  # IoU given to each ground truth's best anchor (best-prior forcing)
_PADDING_IOU = -1.0  # IoU of padding rows: below any real IoU, so padding never matches
# float32 screening keeps this many candidates, re-scored in float64. A box smaller than every
# anchor ties, in exact arithmetic, with every same-area anchor containing it (up to ~25 at the
# finest level); the float64 winner then hinges on the rounding of the anchors' areas.
ANCHOR_CANDIDATES = 32  # per ground truth, out of the 8732 anchors
GT_CANDIDATES = 4  # per anchor, out of the M ground-truth rows
DEFAULT_MAX_TRANSIENT_BYTES = 512 * 2**20  # encode's working-memory budget; sets the chunk size


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
        (``inter / (area_box + area_anchor - inter)``). Works in place on its temporaries, so at
        most three [N, M, A] tensors are alive at once.
    """
    bl, bt, br, bb = (c.unsqueeze(-1) for c in boxes.unbind(dim=-1))  # [N, M, 1]
    al, at, ar, ab = anchors.unbind(dim=-1)  # [A]
    inter = torch.minimum(br, ar).sub_(torch.maximum(bl, al)).clamp_(min=0)
    inter_h = torch.minimum(bb, ab).sub_(torch.maximum(bt, at)).clamp_(min=0)
    inter.mul_(inter_h)
    del inter_h
    union = ((br - bl) * (bb - bt) + (ar - al) * (ab - at)).sub_(inter)
    return inter.div_(union)


def _pair_iou(boxes: Tensor, anchors: Tensor) -> Tensor:
    """Element-wise IoU of broadcast ltrb pairs [..., 4] x [..., 4] -> [...], same formula."""
    bl, bt, br, bb = boxes.unbind(dim=-1)
    al, at, ar, ab = anchors.unbind(dim=-1)
    inter_w = (torch.minimum(br, ar) - torch.maximum(bl, al)).clamp(min=0)
    inter_h = (torch.minimum(bb, ab) - torch.maximum(bt, at)).clamp(min=0)
    inter = inter_w * inter_h
    return inter / ((br - bl) * (bb - bt) + (ar - al) * (ab - at) - inter)


def transient_bytes_per_image(max_boxes: int, compute_dtype: torch.dtype) -> int:
    """Analytic working memory of :func:`encode` per image (bytes), from the tensor shapes.

    The [M, A] IoU matrix and two temporaries of the same size in ``compute_dtype`` dominate; the
    float32 setting adds the candidate tensors ([M, 32] and [4, A] indices and float64 re-scored
    boxes) and both add the float64 offset arithmetic on [A, 4].
    """
    a, m = NUM_ANCHORS, max_boxes
    size = torch.finfo(compute_dtype).bits // 8
    total = 3 * m * a * size + 6 * a * 4 * 8  # IoU working set + float64 offsets
    if compute_dtype != torch.float64:
        k_a, k_g = min(ANCHOR_CANDIDATES, a), min(GT_CANDIDATES, m)
        total += m * k_a * (8 + 4 + 4 * 8 + 3 * 8)  # indices, values, boxes, IoU temporaries
        total += k_g * a * (8 + 4 + 4 * 8 + 4 * 8)
    return total


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


def _first_argmax(values: Tensor, index: Tensor, dim: int, size: int) -> tuple[Tensor, Tensor]:
    """(max, smallest ``index`` among the maxima) of ``values`` along ``dim``."""
    best = values.amax(dim=dim, keepdim=True)
    first = torch.where(values == best, index, size).amin(dim=dim)
    return best.squeeze(dim), first


def _match(
    boxes64: Tensor, valid: Tensor, compute_dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Best ground truth of each anchor and best anchor of each ground truth (float64 decisions).

    Args:
        boxes64: float64 [C, M, 4] ltrb; valid: bool [C, M].

    Returns:
        (best_gt_iou float64 [C, A], best_gt_idx int64 [C, A], best_anchor_idx int64 [C, M]).
    """
    c, m = valid.shape
    anchors64 = _anchors("ltrb", torch.float64, boxes64.device)
    if compute_dtype == torch.float64:
        iou = batched_box_iou(boxes64, anchors64).masked_fill_(~valid.unsqueeze(-1), _PADDING_IOU)
        best_gt_iou, best_gt_idx = iou.max(dim=1)  # first index on ties
        return best_gt_iou, best_gt_idx, iou.argmax(dim=2)

    # float32 screen: the candidates among which the float64 arg-max lies.
    iou = batched_box_iou(
        boxes64.to(compute_dtype), _anchors("ltrb", compute_dtype, boxes64.device)
    )
    iou.masked_fill_(~valid.unsqueeze(-1), _PADDING_IOU)
    cand_anchor = iou.topk(min(ANCHOR_CANDIDATES, NUM_ANCHORS), dim=2).indices  # [C, M, Ka]
    # Ground-truth candidates by repeated first-index arg-max (topk does not say which of equal
    # values it returns): exact duplicates of a box then always include the lowest index.
    picks = []
    for _ in range(min(GT_CANDIDATES, m)):
        pick = iou.argmax(dim=1, keepdim=True)  # [C, 1, A]
        picks.append(pick)
        iou.scatter_(1, pick, float("-inf"))
    cand_gt = torch.cat(picks, dim=1)  # [C, Kg, A]
    del iou

    # Re-score in float64 with the reference's formula; decide on those values.
    iou_a = _pair_iou(boxes64.unsqueeze(2), anchors64[cand_anchor])  # [C, M, Ka]
    _, best_anchor_idx = _first_argmax(iou_a, cand_anchor, 2, NUM_ANCHORS)
    k_g = cand_gt.shape[1]
    gt_boxes = boxes64.gather(1, cand_gt.reshape(c, -1, 1).expand(-1, -1, 4)).view(c, k_g, -1, 4)
    iou_g = _pair_iou(gt_boxes, anchors64)  # [C, Kg, A]
    iou_g = torch.where(valid.gather(1, cand_gt.view(c, -1)).view_as(iou_g), iou_g, _PADDING_IOU)
    best_gt_iou, best_gt_idx = _first_argmax(iou_g, cand_gt, 1, m)
    return best_gt_iou, best_gt_idx, best_anchor_idx


def _encode_chunk(
    gt_boxes: Tensor, labels: Tensor, iou_threshold: float, compute_dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """:func:`encode` for one chunk of images: [C, M, 4], [C, M] -> [C, A, 4], [C, A]."""
    n, m = labels.shape
    device = gt_boxes.device
    boxes = gt_boxes.to(torch.float64)
    valid = labels > 0  # [C, M]
    best_gt_iou, best_gt_idx, best_anchor_idx = _match(boxes, valid, compute_dtype)

    # Best-prior forcing. scatter-amax of the gt index makes the later gt win a shared anchor.
    gt_index = torch.arange(m, device=device).expand(n, m)
    forced_gt = torch.full((n, NUM_ANCHORS), -1, dtype=torch.int64, device=device)
    forced_gt = forced_gt.scatter_reduce(
        1, best_anchor_idx, torch.where(valid, gt_index, -1), reduce="amax", include_self=True
    )
    forced = forced_gt >= 0
    best_gt_idx = torch.where(forced, forced_gt, best_gt_idx)
    positive = forced | (best_gt_iou > iou_threshold)  # [C, A]

    anchors_ltrb = _anchors("ltrb", torch.float64, device)
    anchors_xywh = _anchors("xywh", torch.float64, device)
    label_targets = torch.where(positive, labels.gather(1, best_gt_idx), 0)
    matched = boxes.gather(1, best_gt_idx.unsqueeze(-1).expand(n, NUM_ANCHORS, 4))  # [C, A, 4]
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


def encode(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    iou_threshold: float = 0.5,
    compute_dtype: torch.dtype = torch.float32,
    max_transient_bytes: int | None = DEFAULT_MAX_TRANSIENT_BYTES,
) -> tuple[Tensor, Tensor]:
    """Match ground truth to the 8732 default boxes and encode regression targets.

    Reference semantics (``Encoder.encode`` then ``Loss._loc_vec``), per image:
    each anchor takes its best ground truth (first index on ties); each ground truth's best anchor
    (first anchor on ties) is forced to IoU 2.0 and assigned to it (when two ground truths share a
    best anchor, the later one wins, as the reference's indexed assignment does); anchors with
    IoU > ``iou_threshold`` (strict) are positive and take the matched label, all others are 0.
    IoUs, ties and the threshold are decided on the reference's float64 values in both settings
    of ``compute_dtype`` (see the module docstring).

    Args:
        gt_boxes: float [N, M, 4], ltrb normalised to [0, 1]. Rows whose label is 0 are padding
            and never match. Real boxes must have positive width and height (a zero-size box
            forced onto its best anchor gives an infinite log-size target, as in the reference).
        gt_labels: int64 [N, M], contiguous labels 1..C-1, 0 = padding. An image may have no box.
        iou_threshold: strict positive threshold (0.5).
        compute_dtype: ``torch.float32`` (default: float32 IoU matrix, float64 re-scoring of the
            few candidates) or ``torch.float64`` (the whole IoU matrix in float64).
        max_transient_bytes: working-memory budget; the batch is processed in chunks of
            ``max(1, budget // transient_bytes_per_image(M, compute_dtype))`` images (a fixed
            Python loop, static shapes). None = one chunk.

    Returns:
        ``(loc_targets, label_targets)``: float32 [N, A, 4] offsets
        ``((g_cxy - a_cxy) / a_wh / 0.1, log(g_wh / a_wh) / 0.2)`` (exactly 0 for background
        anchors) and int64 [N, A] labels (0 = background).
    """
    _check_ground_truth(gt_boxes, gt_labels)
    if compute_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"encode: compute_dtype must be float32 or float64, got {compute_dtype}")
    n, m = gt_labels.shape
    labels = gt_labels.long()
    if m == 0:
        return (
            torch.zeros(n, NUM_ANCHORS, 4, device=gt_boxes.device),
            torch.zeros(n, NUM_ANCHORS, dtype=torch.int64, device=gt_boxes.device),
        )
    chunk = n
    if max_transient_bytes is not None:
        chunk = max(1, max_transient_bytes // transient_bytes_per_image(m, compute_dtype))
    if chunk >= n:
        return _encode_chunk(gt_boxes, labels, iou_threshold, compute_dtype)
    parts = [
        _encode_chunk(gt_boxes[s : s + chunk], labels[s : s + chunk], iou_threshold, compute_dtype)
        for s in range(0, n, chunk)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


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
