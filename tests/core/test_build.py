"""ModelConfig validation and build_detector."""

from __future__ import annotations

import pydantic
import pytest
import torch
from ssd_core.build import Detector, build_detector, encode_compute_dtype
from ssd_core.config import ModelConfig
from ssd_core.loss import SSDLoss
from ssd_core.model import SSD300
from ssd_core.postprocess import PostProcessor


def test_defaults() -> None:
    cfg = ModelConfig()
    assert cfg.num_classes is None  # unset: the dataset decides; build_detector falls back to 81
    assert cfg.backbone_weights is None  # random init: runs offline; the presets say "imagenet"
    assert (cfg.score_threshold, cfg.nms_iou_threshold) == (0.05, 0.5)
    assert (cfg.topk_per_class, cfg.max_detections) == (200, 200)
    assert cfg.nms_backend == "matrix"
    assert cfg.encode_dtype == "float32"
    assert encode_compute_dtype(cfg) == torch.float32
    assert encode_compute_dtype(ModelConfig(encode_dtype="float64")) == torch.float64


@pytest.mark.parametrize("value", [None, "none", "None", ""])
def test_none_means_random_init(value) -> None:
    assert ModelConfig(backbone_weights=value).backbone_weights is None


def test_validation_errors() -> None:
    with pytest.raises(pydantic.ValidationError, match="num_classes"):
        ModelConfig(num_classes=1)
    with pytest.raises(pydantic.ValidationError, match="score_threshold"):
        ModelConfig(score_threshold=1.5)
    with pytest.raises(pydantic.ValidationError, match="num_clases"):
        ModelConfig(num_clases=3)  # typo: extra keys are rejected
    with pytest.raises(pydantic.ValidationError, match="nms_backend"):
        ModelConfig(nms_backend="fast")
    with pytest.raises(pydantic.ValidationError, match="encode_dtype"):
        ModelConfig(encode_dtype="float16")


def test_build_detector() -> None:
    cfg = ModelConfig(
        num_classes=7,
        backbone_weights="none",
        score_threshold=0.1,
        max_detections=50,
        nms_backend="torchvision",
    )
    detector = build_detector(cfg)
    assert isinstance(detector, Detector)
    model, criterion, postprocessor = detector
    assert isinstance(model, SSD300) and isinstance(criterion, SSDLoss)
    assert isinstance(postprocessor, PostProcessor)
    assert model.conf_heads[0].out_channels == 4 * 7
    assert postprocessor.score_threshold == 0.1 and postprocessor.max_detections == 50
    assert postprocessor.nms_backend == "torchvision"
    dets = postprocessor(torch.zeros(1, 8732, 4), torch.zeros(1, 8732, 7))
    assert dets.boxes.shape == (1, 50, 4)
