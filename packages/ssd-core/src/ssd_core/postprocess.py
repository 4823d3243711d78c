"""SSD post-processing: decode, softmax, per-class score threshold / top-k / NMS, per-image top-k.

Same detections as the MLPerf reference ``Encoder.decode_batch`` (spec section 4), vectorised over
the batch and all classes with fixed shapes: every (image, class) keeps its ``topk_per_class``
best candidates in a [N, C-1, k] block, greedy NMS walks the k ranks once for all blocks at the
same time (:func:`greedy_nms`), and one ``topk`` per image picks the final detections. No host
sync, no data-dependent shapes. ``nms_backend="torchvision"`` uses ``torchvision.ops.batched_nms``
instead (same result; it falls back to a per-group loop on big inputs, which is slow).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from ssd_core.box_coder import decode


class Detections(NamedTuple):
    """Padded detections of a batch; row ``k`` of image ``i`` is valid iff ``k < counts[i]``.

    Attributes:
        boxes: float32 [N, K, 4] ltrb normalised to [0, 1] of the input image (not clipped).
        scores: float32 [N, K] softmax probabilities, descending within each image.
        labels: int64 [N, K] contiguous labels 1..C-1.
        counts: int64 [N] number of valid rows per image. Padding rows are zero.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    counts: Tensor


def greedy_nms(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over many independent groups at once (the reference's ``decode_single`` loop).

    Within each group, boxes must be sorted by decreasing score. Walking the ranks in order, a valid
    box is kept unless a kept higher-ranked box overlaps it with IoU >= ``iou_threshold`` (the
    reference keeps only ``iou < criteria``).

    Args:
        boxes: float [G, K, 4] ltrb, sorted by score within each group.
        valid: bool [G, K], candidates taking part (e.g. score above threshold).
        iou_threshold: suppression threshold.

    Returns:
        bool [G, K] keep mask.
    """
    k = boxes.shape[1]
    left, top, right, bottom = boxes.unbind(dim=-1)  # [G, K] each
    area = (right - left) * (bottom - top)
    suppressed = ~valid
    keep = torch.zeros_like(valid)
    for i in range(k):
        keep_i = ~suppressed[:, i]
        keep[:, i] = keep_i
        if i + 1 == k:
            break
        inter_w = (
            torch.minimum(right[:, i + 1 :], right[:, i : i + 1])
            - torch.maximum(left[:, i + 1 :], left[:, i : i + 1])
        ).clamp(min=0)
        inter_h = (
            torch.minimum(bottom[:, i + 1 :], bottom[:, i : i + 1])
            - torch.maximum(top[:, i + 1 :], top[:, i : i + 1])
        ).clamp(min=0)
        inter = inter_w * inter_h
        iou = inter / (area[:, i + 1 :] + area[:, i : i + 1] - inter)
        suppressed[:, i + 1 :] |= keep_i.unsqueeze(1) & ~(iou < iou_threshold)
    return keep


def _just_below(threshold: float) -> float:
    """Largest float32 below ``threshold``: ``iou > it`` is then ``iou >= threshold`` for float32 IoUs.

    The reference suppresses a box when IoU >= threshold; torchvision's NMS when IoU > threshold.
    """
    t = torch.tensor(threshold, dtype=torch.float32)
    return torch.nextafter(t, torch.tensor(-1.0)).item()


def _torchvision_keep(boxes: Tensor, valid: Tensor, threshold: float) -> Tensor:
    """Same contract as :func:`greedy_nms`, through ``torchvision.ops.batched_nms`` (syncs)."""
    g, k, _ = boxes.shape
    flat_valid = valid.reshape(-1)
    index = torch.arange(g * k, device=boxes.device)[flat_valid]
    # Scores only order the boxes: rank order inside each group is the score order.
    rank_scores = (k - torch.arange(k, device=boxes.device, dtype=torch.float32)).repeat(g)[
        flat_valid
    ]
    kept = torchvision.ops.batched_nms(
        boxes.reshape(-1, 4)[flat_valid], rank_scores, index // k, _just_below(threshold)
    )
    keep = torch.zeros(g * k, dtype=torch.bool, device=boxes.device)
    keep[index[kept]] = True
    return keep.view(g, k)


class PostProcessor:
    """Turn raw SSD outputs into per-image detections.

    Steps: decode boxes, softmax over classes; for each class 1..C-1 keep scores
    > ``score_threshold`` (candidates whose decoded box is not finite are dropped), at most ``topk_per_class`` of them, greedy NMS suppressing IoU >=
    ``nms_iou_threshold``; then the ``max_detections`` best per image by score.

    Args:
        score_threshold: strict score threshold (0.05).
        nms_iou_threshold: NMS IoU threshold (0.5).
        topk_per_class: candidates per class before NMS (200).
        max_detections: K, detections per image after NMS (200).
        nms_backend: ``"greedy"`` (fixed-shape, sync-free, default) or ``"torchvision"``.
    """

    def __init__(
        self,
        score_threshold: float = 0.05,
        nms_iou_threshold: float = 0.5,
        topk_per_class: int = 200,
        max_detections: int = 200,
        nms_backend: Literal["greedy", "torchvision"] = "greedy",
    ) -> None:
        if nms_backend not in ("greedy", "torchvision"):
            raise ValueError(
                f"PostProcessor: nms_backend must be 'greedy' or 'torchvision', got {nms_backend!r}"
            )
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.topk_per_class = topk_per_class
        self.max_detections = max_detections
        self.nms_backend = nms_backend

    @torch.no_grad()
    def __call__(self, loc: Tensor, logits: Tensor) -> Detections:
        """Post-process a batch.

        Args:
            loc: float [N, A, 4] predicted offsets (any float dtype).
            logits: float [N, A, C] class logits (any float dtype).

        Returns:
            :class:`Detections` with K = ``max_detections`` rows per image, on the input's device.
        """
        if logits.dim() != 3 or loc.shape != (*logits.shape[:2], 4):
            raise ValueError(
                f"PostProcessor: expected loc [N, A, 4] and logits [N, A, C], "
                f"got {tuple(loc.shape)} and {tuple(logits.shape)}"
            )
        n, a, c = logits.shape
        boxes = decode(loc).float()  # [N, A, 4]
        probs = F.softmax(logits.float(), dim=-1)  # [N, A, C]

        # Per (image, class): the top-k candidates, by decreasing score, and which pass the threshold.
        k = min(self.topk_per_class, a)
        top_scores, top_anchor = probs[..., 1:].transpose(1, 2).topk(k, dim=-1)  # [N, C-1, k]
        valid = top_scores > self.score_threshold
        cand_boxes = boxes.gather(
            1, top_anchor.reshape(n, -1, 1).expand(-1, -1, 4)
        )  # [N, (C-1)*k, 4]
        # A diverged model can decode to inf/NaN boxes (exp overflow): such candidates are dropped
        # rather than handed to the evaluator (finite inputs are unaffected).
        valid = valid & torch.isfinite(cand_boxes).all(dim=-1).view_as(valid)
        nms = greedy_nms if self.nms_backend == "greedy" else _torchvision_keep
        keep = nms(
            cand_boxes.view(n * (c - 1), k, 4), valid.view(n * (c - 1), k), self.nms_iou_threshold
        )
        keep = keep.view(n, (c - 1) * k)

        # Per image: the best max_detections kept candidates (kept scores are >= 0 > -1).
        ranked = torch.where(keep, top_scores.reshape(n, -1), -1.0)
        top = min(self.max_detections, ranked.shape[1])
        best_scores, best = ranked.topk(top, dim=1)  # [N, top], descending
        is_det = keep.gather(1, best)
        out_scores = torch.where(is_det, best_scores, 0.0)
        out_labels = torch.where(is_det, best // k + 1, 0)
        out_boxes = torch.where(
            is_det.unsqueeze(-1), cand_boxes.gather(1, best.unsqueeze(-1).expand(-1, -1, 4)), 0.0
        )
        pad = self.max_detections - top
        if pad:
            out_scores = F.pad(out_scores, (0, pad))
            out_labels = F.pad(out_labels, (0, pad))
            out_boxes = F.pad(out_boxes, (0, 0, 0, pad))
        counts = is_det.sum(dim=1)
        return Detections(boxes=out_boxes, scores=out_scores, labels=out_labels, counts=counts)
