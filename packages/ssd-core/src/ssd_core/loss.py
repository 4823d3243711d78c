"""SSD multibox loss: smooth-L1 on positives + cross-entropy with 3:1 hard negative mining.

Same maths as the MLPerf reference ``base_model.py`` ``Loss`` (and NVIDIA's ``OptLoss``), but taking
pre-encoded targets from :func:`ssd_core.box_coder.encode`. Batched, no host sync, no Python loop
over images: usable inside a compiled training step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SSDLossOutput(NamedTuple):
    """Loss terms, each a float32 0-d tensor; ``total`` carries the gradient.

    ``loc`` and ``conf`` are the batch means of each image's regression and classification sums
    divided by its positive count; ``total`` is the mean of their per-image sum.
    """

    total: Tensor
    loc: Tensor
    conf: Tensor


class SSDLoss(nn.Module):
    """Per-image normalised SSD loss, averaged over images.

    For each image: ``loc_sum`` = smooth-L1 (beta 1) summed over the 4 offsets of positive anchors;
    ``conf_sum`` = cross-entropy summed over positives and the ``min(3 * num_pos, A)`` anchors with
    the highest cross-entropy once positives are set to 0 (hard negatives, ranked with a
    sort-of-sort); the image contributes ``(loc_sum + conf_sum) / num_pos`` or 0 without positives.
    Computed in float32 whatever the prediction dtype.

    Args:
        neg_pos_ratio: negatives kept per positive (3).
    """

    def __init__(self, neg_pos_ratio: int = 3) -> None:
        super().__init__()
        self.neg_pos_ratio = neg_pos_ratio

    def forward(
        self, loc: Tensor, logits: Tensor, loc_targets: Tensor, label_targets: Tensor
    ) -> SSDLossOutput:
        """Compute the loss.

        Args:
            loc: float [N, A, 4] predicted offsets (any float dtype).
            logits: float [N, A, C] class logits (any float dtype).
            loc_targets: float [N, A, 4] encoded targets from ``encode``.
            label_targets: int64 [N, A] target labels, 0 = background.

        Returns:
            :class:`SSDLossOutput` of float32 0-d tensors.
        """
        n, a = label_targets.shape
        if loc.shape != (n, a, 4) or loc_targets.shape != (n, a, 4) or logits.shape[:2] != (n, a):
            raise ValueError(
                "SSDLoss: expected loc [N, A, 4], logits [N, A, C], loc_targets [N, A, 4], "
                f"label_targets [N, A]; got {tuple(loc.shape)}, {tuple(logits.shape)}, "
                f"{tuple(loc_targets.shape)}, {tuple(label_targets.shape)}"
            )
        positive = label_targets > 0  # [N, A]
        num_pos = positive.sum(dim=1)  # [N]
        pos_float = positive.float()

        smooth_l1 = F.smooth_l1_loss(loc.float(), loc_targets.float(), reduction="none", beta=1.0)
        loc_sum = (smooth_l1.sum(dim=-1) * pos_float).sum(dim=1)  # [N]

        num_classes = logits.shape[-1]
        ce = F.cross_entropy(
            logits.float().reshape(-1, num_classes), label_targets.reshape(-1), reduction="none"
        ).view(n, a)
        ce_neg = ce.detach().masked_fill(positive, 0.0)
        order = ce_neg.argsort(dim=1, descending=True, stable=True)
        rank = order.argsort(dim=1, stable=True)  # rank[i, j] = position of anchor j by CE
        num_neg = torch.clamp(self.neg_pos_ratio * num_pos, max=a).unsqueeze(-1)
        negative = rank < num_neg
        conf_sum = (ce * (pos_float + negative.float())).sum(dim=1)  # [N]

        has_pos = (num_pos > 0).float()
        denom = num_pos.float().clamp(min=1e-6)
        total = ((loc_sum + conf_sum) * has_pos / denom).mean()
        loc_term = (loc_sum * has_pos / denom).mean()
        conf_term = (conf_sum * has_pos / denom).mean()
        return SSDLossOutput(total=total, loc=loc_term, conf=conf_term)
