"""The model section of the settings: network size, backbone weights, post-processing thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

COCO_NUM_CLASSES = 81
"""C of a model for COCO: its 80 categories + background (label 0)."""


class ModelConfig(BaseModel):
    """Settings for :func:`ssd_core.build.build_detector`."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int | None = Field(
        None,
        ge=2,
        description=(
            f"classes including the background ({COCO_NUM_CLASSES} for COCO); unset = the dataset's categories + 1,"
            " a value is checked against the dataset"
        ),
    )
    backbone_weights: str | None = Field(
        None,
        description=(
            "'imagenet' = torchvision ResNet34 IMAGENET1K_V1 from the torch hub cache "
            "(fetch with `ssd-data download --backbone`; the MLPerf presets); none = random init "
            "(runs offline); else a state-dict path"
        ),
    )
    score_threshold: float = Field(0.05, ge=0.0, lt=1.0, description="keep class scores > this")
    nms_iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="per-class NMS IoU")
    topk_per_class: int = Field(200, ge=1, description="candidates per class before NMS")
    max_detections: int = Field(200, ge=1, description="detections per image after NMS (K)")
    nms_backend: Literal["matrix", "greedy", "torchvision_single", "torchvision"] = Field(
        "matrix",
        description=(
            "how overlapping detections are removed at evaluation (all give the same result): "
            "matrix = all overlaps of each image and class at once, a few big steps (default); "
            "greedy = one small step per candidate rank (~200); torchvision_single = one "
            "torchvision.ops.nms call for the whole batch; torchvision = ops.batched_nms"
        ),
    )
    encode_dtype: Literal["float32", "float64"] = Field(
        "float32",
        description=(
            "number format of the ground-truth-to-anchor overlap table built in every training "
            "step; float32 halves its memory and matches anchors exactly as float64 (the "
            "reference's) does, because close calls are re-checked in float64"
        ),
    )

    @field_validator("backbone_weights", mode="before")
    @classmethod
    def _none_means_random(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null", "random"):
            return None
        return value
