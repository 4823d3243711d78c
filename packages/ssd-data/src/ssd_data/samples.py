"""Map functions of the pipelines: dataset position -> one transformed, fixed-shape sample.

They run in worker threads or processes, so they are plain picklable objects holding the
compact :class:`~ssd_data.coco.CocoIndex` arrays, and they report what happened (bad images,
dropped boxes, size mismatches) as ``events`` carried with the sample; the loader in the main
process counts and logs them when the batch is consumed.

Bad images (missing, truncated, not an image):
- ``policy="error"``: raise :class:`~ssd_data.errors.BadImageError` naming the file;
- ``policy="skip"``: training replaces the image by another one drawn from the sample's own
  random stream (so the replacement is the same on every run and resume), up to
  ``MAX_REPLACEMENTS`` times in a row; evaluation leaves the image out of its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ssd_data.augment import AugmentImpl, augment_train, resize_eval
from ssd_data.coco import CocoIndex
from ssd_data.decode import DEFAULT_MAX_IMAGE_PIXELS, UnreadableImage
from ssd_data.errors import BadImageError

MAX_REPLACEMENTS = 16
BadImagePolicy = Literal["skip", "error"]
# Event tuples: ("bad_image", file, reason), ("dropped_boxes", file, count),
# ("size_mismatch", file, "annotated HxW, file HxW").
Event = tuple[str, str, object]


def sample_rng(seed: int, epoch: int, position: int, attempt: int = 0) -> np.random.Generator:
    """The random stream of one sample: a function of (seed, epoch, position in the epoch)."""
    return np.random.default_rng([seed % 2**63, epoch, position, attempt])


def bad_image_error(path: Path, reason: str, image_id: int, annotations: Path) -> BadImageError:
    return BadImageError(
        f"cannot read image {path} (image id {image_id} of {annotations}): {reason}. Replace the "
        "file (re-download with `ssd-data download --root DIR`, or regenerate the synthetic "
        f"set), remove the image from {annotations.name}, or set data.bad_image_policy=skip "
        "to replace unreadable images and count them."
    )


@dataclass
class TrainSample:
    """``image`` uint8[300, 300, 3]; ``boxes`` float32[M, 4] ltrb normalised, zero-padded;
    ``labels`` int64[M], 0 = padding; ``image_id`` COCO id; ``events`` see module docs."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    events: list[Event] = field(default_factory=list)


@dataclass
class EvalSample:
    """``image`` uint8[300, 300, 3] or None when unreadable and skipped; ``size`` annotated
    (height, width); ``image_id`` COCO id."""

    image: np.ndarray | None
    image_id: int
    size: tuple[int, int]
    events: list[Event] = field(default_factory=list)


def _size_events(path: Path, annotated: tuple[int, int], decoded: tuple[int, int]) -> list[Event]:
    if annotated == decoded:
        return []
    detail = f"annotated {annotated[0]}x{annotated[1]}, file {decoded[0]}x{decoded[1]} (HxW)"
    return [("size_mismatch", str(path), detail)]


@dataclass
class SampleSource:
    """What a training map function needs: the annotations, the image folder, the run seed (each
    sample's generator is ``sample_rng(seed, epoch, position, attempt)``) and the augmentation and
    bad-image settings. Shared by the CPU path (:class:`TrainSampleFn`) and the device path
    (``ssd_data.device_samples.DeviceSampleFn``), so both draw the same decisions."""

    index: CocoIndex
    image_dir: Path
    seed: int
    max_boxes: int
    crop_attempts: int = 1
    hue: float = 0.05
    impl: AugmentImpl = "fast"
    crowd_boxes: bool = True
    policy: BadImagePolicy = "skip"
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS  # data.max_image_pixels

    def path(self, i: int) -> Path:
        """File of dataset image ``i``."""
        return self.image_dir / self.index.file_name(i)


@dataclass
class TrainSampleFn(SampleSource):
    """(epoch, position, dataset index) -> :class:`TrainSample` (the training map function)."""

    def __call__(self, item: tuple[int, int, int]) -> TrainSample:
        epoch, position, i = item
        events: list[Event] = []
        for attempt in range(MAX_REPLACEMENTS + 1):
            rng = sample_rng(self.seed, epoch, position, attempt)
            path = self.path(i)
            boxes, labels, crowd = self.index.annotations(i)
            if not self.crowd_boxes:
                boxes, labels = boxes[~crowd], labels[~crowd]
            try:
                aug = augment_train(
                    path,
                    boxes,
                    labels,
                    rng,
                    crop_attempts=self.crop_attempts,
                    hue=self.hue,
                    impl=self.impl,
                    max_pixels=self.max_pixels,
                )
                break
            except UnreadableImage as e:
                if self.policy == "error":
                    raise bad_image_error(
                        path, e.reason, self.index.image_id(i), self.index.path
                    ) from None
                events.append(("bad_image", str(path), e.reason))
                i = int(rng.integers(self.index.num_images))
        else:
            raise BadImageError(
                f"{MAX_REPLACEMENTS + 1} unreadable images in a row under {self.image_dir} (last: "
                f"{events[-1][1]}: {events[-1][2]}); is data.train_images the right folder?"
            )
        events += _size_events(path, self.index.image_size(i), aug.decoded_hw)
        k = len(aug.boxes)
        if k > self.max_boxes:
            events.append(("dropped_boxes", str(path), k - self.max_boxes))
            k = self.max_boxes
        boxes_out = np.zeros((self.max_boxes, 4), np.float32)
        labels_out = np.zeros(self.max_boxes, np.int64)
        boxes_out[:k] = aug.boxes[:k]
        labels_out[:k] = aug.labels[:k]
        return TrainSample(aug.image, boxes_out, labels_out, self.index.image_id(i), events)


@dataclass
class EvalSampleFn:
    """(epoch, position, dataset index) -> :class:`EvalSample` (the evaluation map function)."""

    index: CocoIndex
    image_dir: Path
    impl: AugmentImpl = "fast"
    policy: BadImagePolicy = "skip"
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS  # data.max_image_pixels

    def __call__(self, item: tuple[int, int, int]) -> EvalSample:
        _, _, i = item
        path = self.image_dir / self.index.file_name(i)
        image_id, size = self.index.image_id(i), self.index.image_size(i)
        try:
            image, decoded_hw = resize_eval(path, impl=self.impl, max_pixels=self.max_pixels)
        except UnreadableImage as e:
            if self.policy == "error":
                raise bad_image_error(path, e.reason, image_id, self.index.path) from None
            return EvalSample(None, image_id, size, [("bad_image", str(path), e.reason)])
        return EvalSample(image, image_id, size, _size_events(path, size, decoded_hw))
