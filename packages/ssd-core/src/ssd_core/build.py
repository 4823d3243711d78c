"""Factory: model config -> (model, criterion, postprocessor)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ssd_core.config import COCO_NUM_CLASSES, ModelConfig
from ssd_core.loss import SSDLoss
from ssd_core.model import SSD300
from ssd_core.postprocess import PostProcessor


class Detector(NamedTuple):
    """The three objects a trainer needs: network, loss and post-processing."""

    model: SSD300
    criterion: SSDLoss
    postprocessor: PostProcessor


def build_detector(cfg: ModelConfig) -> Detector:
    """Build SSD300 (loading backbone weights as configured), SSDLoss and PostProcessor.

    ``cfg.num_classes`` unset means COCO's (the trainer sets it from the dataset first).
    """
    num_classes = cfg.num_classes or COCO_NUM_CLASSES
    model = SSD300(num_classes=num_classes, backbone_weights=cfg.backbone_weights)
    return Detector(model=model, criterion=SSDLoss(), postprocessor=build_postprocessor(cfg))


def build_postprocessor(cfg: ModelConfig) -> PostProcessor:
    """The evaluation post-processing (decode + NMS) with ``cfg``'s thresholds and sizes."""
    return PostProcessor(
        score_threshold=cfg.score_threshold,
        nms_iou_threshold=cfg.nms_iou_threshold,
        topk_per_class=cfg.topk_per_class,
        max_detections=cfg.max_detections,
        nms_backend=cfg.nms_backend,
    )


def encode_compute_dtype(cfg: ModelConfig) -> torch.dtype:
    """``cfg.encode_dtype`` as the ``compute_dtype`` of :func:`ssd_core.box_coder.encode`."""
    return torch.float64 if cfg.encode_dtype == "float64" else torch.float32
