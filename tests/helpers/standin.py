"""A tiny stand-in for SSD300 with its interface, so that the real ``Trainer`` runs in seconds.

``Trainer(settings, detector_factory=tiny_detector)`` trains, evaluates, checkpoints and exports it
through exactly the code SSD300 goes through; only the network is small.
"""

from __future__ import annotations

import torch
from ssd_core import COCO_NUM_CLASSES, Detector, ModelConfig, SSDLoss
from ssd_core.build import build_postprocessor
from torch import Tensor, nn

NUM_ANCHORS = 8732


class TinySSD(nn.Module):
    """Images float [N, 3, 300, 300] -> ``(loc [N, 8732, 4], logits [N, 8732, C])``.

    A per-anchor bias plus a per-image shift computed from 4x4-pooled pixels through a 1x1 conv,
    BatchNorm (running statistics are part of the state that resume must restore) and dropout
    (so the RNG state matters too). About 8732 * (4 + C) parameters.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(3, 8, kernel_size=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Flatten(),
        )
        self.shift = nn.Linear(8 * 16, 4 + num_classes)
        self.anchor_loc = nn.Parameter(torch.zeros(NUM_ANCHORS, 4))
        self.anchor_logits = nn.Parameter(torch.zeros(NUM_ANCHORS, num_classes))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        shift = self.shift(self.features(images)).unsqueeze(1)  # [N, 1, 4 + C]
        loc = self.anchor_loc.to(shift.dtype) + shift[..., :4]
        logits = self.anchor_logits.to(shift.dtype) + shift[..., 4:]
        return loc.contiguous(), logits.contiguous()


def tiny_detector(cfg: ModelConfig) -> Detector:
    """``ssd_core.build_detector`` with :class:`TinySSD` in place of SSD300 (same loss and
    post-processing settings)."""
    num_classes = cfg.num_classes or COCO_NUM_CLASSES
    return Detector(TinySSD(num_classes), SSDLoss(), build_postprocessor(cfg))
