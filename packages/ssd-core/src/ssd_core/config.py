"""The model section of the settings: network size, backbone weights, post-processing thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ModelConfig(BaseModel):
    """Settings for :func:`ssd_core.build.build_detector`."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(81, ge=2, description="classes including background 0 (81 for COCO)")
    backbone_weights: str | None = Field(
        "imagenet",
        description=(
            "'imagenet' = torchvision ResNet34 IMAGENET1K_V1 from the torch hub cache "
            "(fetch with `ssd-data download --backbone`); none = random init; else a state-dict path"
        ),
    )
    score_threshold: float = Field(0.05, ge=0.0, lt=1.0, description="keep class scores > this")
    nms_iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="per-class NMS IoU")
    topk_per_class: int = Field(200, ge=1, description="candidates per class before NMS")
    max_detections: int = Field(200, ge=1, description="detections per image after NMS (K)")
    nms_backend: Literal["greedy", "torchvision"] = Field(
        "greedy", description="greedy = fixed-shape, sync-free NMS; torchvision = ops.batched_nms"
    )

    @field_validator("backbone_weights", mode="before")
    @classmethod
    def _none_means_random(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null", "random"):
            return None
        return value
