"""SSD post-processing: decode, softmax, per-class score threshold / top-k / NMS, per-image top-k.

Same detections as the MLPerf reference ``Encoder.decode_batch`` (spec section 4), vectorised over
the batch: one ``torchvision.ops.batched_nms`` call for all (image, class) groups, padded outputs.
"""

from __future__ import annotations

from typing import NamedTuple

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


def _just_below(threshold: float) -> float:
    """Largest float32 below ``threshold``: ``iou > it`` is then ``iou >= threshold`` for float32 IoUs.

    The reference suppresses a box when IoU >= threshold (it keeps ``iou < criteria``);
    torchvision's NMS suppresses when IoU > threshold.
    """
    t = torch.tensor(threshold, dtype=torch.float32)
    return torch.nextafter(t, torch.tensor(-1.0)).item()


class PostProcessor:
    """Turn raw SSD outputs into per-image detections.

    Steps: decode boxes, softmax over classes; for each class 1..C-1 keep scores
    > ``score_threshold``, at most ``topk_per_class`` of them, greedy NMS suppressing IoU >=
    ``nms_iou_threshold``; then the ``max_detections`` best per image by score.

    Args:
        score_threshold: strict score threshold (0.05).
        nms_iou_threshold: NMS IoU threshold (0.5).
        topk_per_class: candidates per class before NMS (200).
        max_detections: K, detections per image after NMS (200).
    """

    def __init__(
        self,
        score_threshold: float = 0.05,
        nms_iou_threshold: float = 0.5,
        topk_per_class: int = 200,
        max_detections: int = 200,
    ) -> None:
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.topk_per_class = topk_per_class
        self.max_detections = max_detections
        self._torchvision_nms_threshold = _just_below(nms_iou_threshold)

    @torch.no_grad()
    def __call__(self, loc: Tensor, logits: Tensor) -> Detections:
        """Post-process a batch.

        Args:
            loc: float [N, A, 4] predicted offsets (any float dtype).
            logits: float [N, A, C] class logits (any float dtype).

        Returns:
            :class:`Detections` with K = ``max_detections`` rows per image, on the input's device.
            (NMS output sizes are data-dependent, so this syncs with the device once per call;
            keep it out of compiled training code.)
        """
        if logits.dim() != 3 or loc.shape != (*logits.shape[:2], 4):
            raise ValueError(
                f"PostProcessor: expected loc [N, A, 4] and logits [N, A, C], "
                f"got {tuple(loc.shape)} and {tuple(logits.shape)}"
            )
        n, a, c = logits.shape
        device = logits.device
        boxes = decode(loc).float()  # [N, A, 4]
        probs = F.softmax(logits.float(), dim=-1)  # [N, A, C]

        # Per (image, class): the top-k candidates above the threshold.
        class_scores = probs[..., 1:].transpose(1, 2)  # [N, C-1, A]
        k = min(self.topk_per_class, a)
        top_scores, top_anchor = class_scores.topk(k, dim=-1)  # [N, C-1, k], descending
        keep = top_scores > self.score_threshold
        image_idx = torch.arange(n, device=device).view(n, 1, 1).expand_as(top_anchor)
        class_idx = torch.arange(1, c, device=device).view(1, c - 1, 1).expand_as(top_anchor)
        image_idx, class_idx, anchor_idx = image_idx[keep], class_idx[keep], top_anchor[keep]
        cand_scores = top_scores[keep]
        cand_boxes = boxes[image_idx, anchor_idx]  # [P, 4]

        kept = torchvision.ops.batched_nms(
            cand_boxes, cand_scores, image_idx * c + class_idx, self._torchvision_nms_threshold
        )  # indices, by decreasing score
        # Group by image (stable: score order kept inside an image), then rank within the image.
        kept = kept[torch.sort(image_idx[kept], stable=True).indices]
        kept_image = image_idx[kept]
        per_image = torch.bincount(kept_image, minlength=n)
        first = torch.cumsum(per_image, dim=0) - per_image
        rank = torch.arange(kept.numel(), device=device) - first[kept_image]
        in_top = rank < self.max_detections
        kept, kept_image, rank = kept[in_top], kept_image[in_top], rank[in_top]

        out_boxes = torch.zeros(n, self.max_detections, 4, dtype=torch.float32, device=device)
        out_scores = torch.zeros(n, self.max_detections, dtype=torch.float32, device=device)
        out_labels = torch.zeros(n, self.max_detections, dtype=torch.int64, device=device)
        out_boxes[kept_image, rank] = cand_boxes[kept]
        out_scores[kept_image, rank] = cand_scores[kept]
        out_labels[kept_image, rank] = class_idx[kept]
        counts = per_image.clamp(max=self.max_detections)
        return Detections(boxes=out_boxes, scores=out_scores, labels=out_labels, counts=counts)
