"""SSD post-processing: decode, softmax, per-class score threshold / top-k / NMS, per-image top-k.

Same detections as the MLPerf reference ``Encoder.decode_batch`` (spec section 4), vectorised over
the batch and all classes with fixed shapes: every (image, class) keeps its ``topk_per_class``
best candidates in a [N, C-1, k] block, NMS runs for all blocks at the same time, and one ``topk``
per image picks the final detections. NMS backends (``nms_backend``), all giving the reference's
greedy result:

- ``"matrix"`` (default, :func:`matrix_nms`): the [k, k] IoU matrix of every block at once, then
  greedy NMS solved as a fixed point (a handful of whole-batch steps; the one host sync of a batch
  is its convergence check after 8 steps, one more per further 8 steps for suppression chains of
  8 or more);
- ``"greedy"`` (:func:`greedy_nms`): one step per candidate rank (k steps of ~15 small kernels),
  no host sync at all;
- ``"torchvision_single"`` (:func:`torchvision_single_nms`): one ``torchvision.ops.nms`` call over
  the valid candidates of the whole batch, blocks kept apart by float64 coordinate offsets (its
  IoUs are float64, so a pair whose float32 IoU rounds onto the threshold may differ);
- ``"torchvision"``: ``torchvision.ops.batched_nms`` (a per-class loop on big inputs, slow).
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


NMS_WORKSPACE_BYTES = 2 * 2**30
"""Bound on the float32 temporaries of :func:`matrix_nms`'s suppression matrix (12 bytes per box
pair): groups beyond it are done in further chunks. At ``topk_per_class`` = 200 one chunk holds
4,473 (image, class) blocks, i.e. 55 images of COCO's 80 classes, so an evaluation batch up to
that size is one chunk and its operation count does not grow with the batch."""


def _suppression_matrix(boxes: Tensor, iou_threshold: float, chunk: int) -> Tensor:
    """bool [G, K, K]: ``[g, j, i]`` = box ``i`` ranks before box ``j`` and would suppress it.

    IoUs are computed exactly as :func:`greedy_nms` does (``inter / (area_j + area_i - inter)``
    in the boxes' dtype), ``chunk`` groups at a time to bound the float temporaries (three
    [chunk, K, K] buffers at the peak).
    """
    g, k, _ = boxes.shape
    earlier = torch.ones(k, k, dtype=torch.bool, device=boxes.device).tril(diagonal=-1)  # i < j
    left, top, right, bottom = (c.unsqueeze(2) for c in boxes.unbind(dim=-1))  # [G, K(j), 1]
    area = (right - left) * (bottom - top)
    parts = []
    for s in range(0, g, chunk):
        x0, y0, x1, y1, a = (c[s : s + chunk] for c in (left, top, right, bottom, area))
        t = lambda c: c.transpose(1, 2)  # noqa: E731  [g, 1, K(i)]
        inter = torch.minimum(x1, t(x1)).sub_(torch.maximum(x0, t(x0))).clamp_(min=0)
        inter_h = torch.minimum(y1, t(y1)).sub_(torch.maximum(y0, t(y0))).clamp_(min=0)
        inter.mul_(inter_h)
        union = torch.add(a, t(a), out=inter_h).sub_(inter)  # reuses inter_h's memory
        iou = torch.div(inter, union, out=union)
        del inter
        parts.append(torch.lt(iou, iou_threshold).logical_not_().logical_and_(earlier))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def matrix_nms(
    boxes: Tensor,
    valid: Tensor,
    iou_threshold: float,
    check_every: int = 8,
    workspace_bytes: int = NMS_WORKSPACE_BYTES,
) -> Tensor:
    """Greedy NMS (same contract and result as :func:`greedy_nms`) without a loop over the ranks.

    With ``S[j, i]`` = "box i ranks before j and overlaps it with IoU >= threshold", greedy NMS
    keeps exactly the fixed point of ``keep[j] = valid[j] and not any_i(keep[i] and S[j, i])``
    (unique: rank j depends only on earlier ranks, so after t whole-batch steps from
    ``keep = valid`` ranks < t are final, and all K after K steps). Convergence is checked every
    ``check_every`` steps by comparing the last two iterates (one step that changes nothing is the
    fixed point): the one host sync of a batch whose longest suppression chain is shorter than
    ``check_every`` (one more per further ``check_every`` steps; none when ``check_every >= K``).

    Args:
        boxes: float [G, K, 4] ltrb, sorted by score within each group.
        valid: bool [G, K], candidates taking part.
        iou_threshold: suppression threshold (IoU >= it suppresses).
        check_every: steps between convergence checks (>= 1). 8: random outputs and the
            trained-like ones of ``bench/nms_speed.py`` (up to 4 objects per image, batch 8 and
            32) converge within it, so a batch makes one sync (4 would make two).
        workspace_bytes: bound on the float temporaries of the suppression matrix
            (:data:`NMS_WORKSPACE_BYTES`).

    Returns:
        bool [G, K] keep mask.
    """
    k = boxes.shape[1]
    chunk = max(1, workspace_bytes // max(1, k * k * 4 * 3))
    suppresses = _suppression_matrix(boxes, iou_threshold, chunk)
    suppresses &= valid.unsqueeze(1)  # invalid boxes suppress nothing
    keep, steps = valid, 0
    while True:
        previous = keep
        for _ in range(check_every):
            previous, keep = keep, valid & ~(suppresses & keep.unsqueeze(1)).any(dim=2)
        steps += check_every
        # after K steps every rank is final; before, one unchanged step is the fixed point
        if steps >= k or torch.equal(keep, previous):
            return keep


def torchvision_single_nms(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Same contract as :func:`greedy_nms`: one ``torchvision.ops.nms`` call for all groups (syncs).

    The valid candidates of all groups are shifted apart by ``group * span`` in float64 (exact
    for float32 inputs of moderate size) so that boxes of different groups never overlap; the
    score passed to torchvision is minus the rank. IoUs are then float64, not float32.
    """
    g, k, _ = boxes.shape
    index = valid.reshape(-1).nonzero().squeeze(1)
    keep = torch.zeros(g * k, dtype=torch.bool, device=boxes.device)
    if index.numel() == 0:
        return keep.view(g, k)
    cand = boxes.reshape(-1, 4)[index].double()
    span = (cand.max() - cand.min()).clamp(min=0) + 1.0
    cand = cand + ((index // k).double() * span).unsqueeze(1)
    rank_scores = -(index % k).double()
    threshold = torch.nextafter(
        torch.tensor(iou_threshold, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    ).item()  # torchvision suppresses IoU > t; the reference IoU >= threshold
    kept = torchvision.ops.nms(cand, rank_scores, threshold)
    keep[index[kept]] = True
    return keep.view(g, k)


_NMS = {
    "matrix": matrix_nms,
    "greedy": greedy_nms,
    "torchvision_single": torchvision_single_nms,
    "torchvision": _torchvision_keep,
}
NmsBackend = Literal["matrix", "greedy", "torchvision_single", "torchvision"]


class PostProcessor:
    """Turn raw SSD outputs into per-image detections.

    Steps: decode boxes, softmax over classes; for each class 1..C-1 keep scores
    > ``score_threshold`` (candidates whose decoded box is not finite are dropped), at most ``topk_per_class`` of them, greedy NMS suppressing IoU >=
    ``nms_iou_threshold``; then the ``max_detections`` best per image by score.

    Fixed shapes and a constant number of operations per batch (up to 55 images of 81 classes
    per chunk, :data:`NMS_WORKSPACE_BYTES`); the default ``matrix`` backend makes one host sync
    per batch, its convergence check (:func:`matrix_nms`).

    Args:
        score_threshold: strict score threshold (0.05).
        nms_iou_threshold: NMS IoU threshold (0.5).
        topk_per_class: candidates per class before NMS (200).
        max_detections: K, detections per image after NMS (200).
        nms_backend: ``"matrix"`` (default), ``"greedy"``, ``"torchvision_single"`` or
            ``"torchvision"`` (see the module docstring).
    """

    def __init__(
        self,
        score_threshold: float = 0.05,
        nms_iou_threshold: float = 0.5,
        topk_per_class: int = 200,
        max_detections: int = 200,
        nms_backend: NmsBackend = "matrix",
    ) -> None:
        if nms_backend not in _NMS:
            raise ValueError(
                f"PostProcessor: nms_backend must be one of {sorted(_NMS)}, got {nms_backend!r}"
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
        nms = _NMS[self.nms_backend]
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
