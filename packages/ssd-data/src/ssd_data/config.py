"""Settings of the data package (the ``data`` section of the trainer's settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Padding size M of the ground-truth boxes of a training batch that COCO needs (the presets set
#: it). COCO train2017's most crowded image has 93 annotations (val2017: 63), so 128 keeps every
#: box with margin; an image with more boxes loses the extra ones, and they are counted
#: (``stats()["dropped_boxes_max"]``) and logged.
COCO_MAX_BOXES = 128

#: Default of ``data.max_image_pixels``: an image whose header declares more pixels is unreadable
#: (a decompression bomb or a corrupt header), refused before any pixel is decoded. 100x COCO's
#: largest image (640 x 640), room for 40-megapixel photographs, under half of PIL's own warning
#: limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 M).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


class DataConfig(BaseModel):
    """Where the COCO-format data is and how the input pipelines run.

    ``root`` is a dataset folder with ``train2017/``, ``val2017/`` and ``annotations/``; each
    of the four paths below defaults to its COCO place under ``root`` and may be set on its own
    (any COCO-format dataset works). ``root=None`` means "use the synthetic dataset", which the
    trainer resolves.
    """

    model_config = ConfigDict(extra="forbid")

    root: Path | None = None
    train_images: Path | None = Field(None, description="default: root/train2017")
    train_annotations: Path | None = Field(
        None, description="default: root/annotations/instances_train2017.json"
    )
    val_images: Path | None = Field(None, description="default: root/val2017")
    val_annotations: Path | None = Field(
        None, description="default: root/annotations/instances_val2017.json"
    )

    # The defaults are CPU-sized (the default job); the presets set GPU-sized values.
    batch_size: int = Field(8, ge=1, description="training images per step and rank")
    eval_batch_size: int = Field(16, ge=1, description="evaluation images per batch and rank")
    num_workers: int = Field(1, ge=0, description="decode/augment workers per rank (0 = inline)")
    worker_type: Literal["thread", "process"] = "thread"
    multiprocessing_context: Literal["fork", "forkserver", "spawn"] | None = Field(
        None, description="start method of process workers (None: the platform's default)"
    )
    max_boxes: int = Field(
        16,
        ge=1,
        description=(
            "M: boxes per image in a training batch (padded); the default job's synthetic "
            f"images hold <= 3 objects, COCO needs {COCO_MAX_BOXES}"
        ),
    )
    crop_attempts: int = Field(
        1, description="SSD random-crop attempts per drawn option: 1 or 50 (logged as max_samples)"
    )
    hue: float = Field(
        0.05, ge=0.0, le=0.5, description="colour-jitter hue range (circle fraction)"
    )
    augment_impl: Literal["fast", "reference"] = Field(
        "fast",
        description=(
            "'fast': the reference's PIL crop, flip and bilinear resize (JPEG draft decoding when "
            "the image is at least twice the needed size), colour jitter fused into one PIL "
            "colour-matrix pass; 'reference': PIL crop/flip/resize + the four torchvision "
            "functional colour ops, as the MLPerf reference"
        ),
    )
    augment_device: Literal["cpu", "cuda", "auto"] = Field(
        "auto",
        description=(
            "where training images are decoded and augmented. 'cpu': in the loader workers (PIL); "
            "'cuda': the workers only read the JPEG bytes and draw the random crop/flip/jitter, "
            "and decoding and pixel work run on the training device (on the CPU when training on "
            "the CPU, for tests); 'auto': 'cuda' when training on a GPU, else 'cpu'. Same "
            "decisions, boxes and labels either way; augment_impl picks the colour jitter"
        ),
    )
    train_crowd_boxes: bool = Field(
        True, description="train on iscrowd=1 boxes too, as the MLPerf reference does"
    )
    bad_image_policy: Literal["skip", "error"] = Field(
        "skip",
        description=(
            "'skip': replace an unreadable training image by another one chosen from the seed "
            "(eval: leave it out), count and log it; 'error': stop, naming the file"
        ),
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        description=(
            "an image whose header declares more pixels (width x height) is unreadable (a "
            "decompression bomb or a corrupt header), before any pixel is decoded; counted and "
            "named like a truncated image (data.bad_image_policy). Default 40 M: 100x COCO's "
            "largest image, under PIL's own limit (89.5 M)"
        ),
    )
    eval_all_images: bool = Field(
        False, description="evaluate all val images, not only the annotated ones (4,952 of 5,000)"
    )
    prefetch: int = Field(2, ge=1, description="batches prepared ahead of the consumer")
    pin_memory: bool = Field(True, description="pin batches (only when CUDA is available)")
    channels_last: bool = Field(
        True,
        description=(
            "images as a channels_last view of the NHWC batch buffer (no copy); False: "
            "contiguous NCHW (one copy per batch in the main process)"
        ),
    )
    cache_index: bool = Field(
        True, description="cache the parsed annotations as .npz next to the json"
    )

    @field_validator("crop_attempts")
    @classmethod
    def _legal_crop_attempts(cls, value: int) -> int:
        if value not in (1, 50):
            raise ValueError(
                f"crop_attempts must be 1 (the reference default) or 50, the only values the MLPerf "
                f"rules allow for max_samples; got {value}"
            )
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> DataConfig:
        if self.root is not None:
            root = Path(self.root)
            if self.train_images is None:
                self.train_images = root / "train2017"
            if self.val_images is None:
                self.val_images = root / "val2017"
            if self.train_annotations is None:
                self.train_annotations = root / "annotations" / "instances_train2017.json"
            if self.val_annotations is None:
                self.val_annotations = root / "annotations" / "instances_val2017.json"
        return self
