"""The one sample loop both input paths run: draw the sample's random stream, read the image,
replace an unreadable one, then drop or pad the boxes to the fixed ``max_boxes``.

Map functions run in worker threads or processes, so they are plain picklable objects holding
the compact :class:`~ssd_data.coco.CocoIndex` arrays, and they report what happened (bad images,
dropped boxes, size mismatches) as ``events`` carried with the sample; the loader in the main
process counts and logs them when the batch is consumed.

Bad images (missing, truncated, not an image):
- ``policy="error"``: raise :class:`~ssd_data.errors.BadImageError` naming the file;
- ``policy="skip"``: training replaces the image by another one drawn from the sample's own
  random stream (so the replacement is the same on every run and resume), up to
  ``MAX_REPLACEMENTS`` times in a row; evaluation leaves the image out of its batch.

The two paths differ only in what one attempt hands over: finished pixels
(:class:`ssd_data.host.samples.TrainSampleFn`) or the file's bytes with the decisions
(:class:`ssd_data.device.samples.DeviceSampleFn`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from ssd_data.coco import CocoIndex
from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS
from ssd_data.errors import BadImageError, UnreadableImage

#: Side of the square training and evaluation images.
OUTPUT_SIZE = 300
MAX_REPLACEMENTS = 16
BadImagePolicy = Literal["skip", "error"]
AugmentImpl = Literal["fast", "reference"]
# Event tuples: ("bad_image", file, reason), ("dropped_boxes", file, count),
# ("size_mismatch", file, "annotated HxW, file HxW").
Event = tuple[str, str, object]
Drawn = TypeVar("Drawn")


def sample_rng(seed: int, epoch: int, position: int, attempt: int = 0) -> np.random.Generator:
    """The random stream of one sample: a function of (seed, epoch, position in the epoch)."""
    return np.random.default_rng([seed % 2**63, epoch, position, attempt])


def bad_image_error(path: Path, reason: str, image_id: int, annotations: Path) -> BadImageError:
    """The error of ``data.bad_image_policy=error``: which file, which record, what to do."""
    return BadImageError(
        f"cannot read image {path} (image id {image_id} of {annotations}): {reason}. Replace the "
        "file (re-download with `ssd-data download --root DIR`, or regenerate the synthetic "
        f"set), remove the image from {annotations.name}, or set data.bad_image_policy=skip "
        "to replace unreadable images and count them."
    )


def unreadable_event(
    policy: BadImagePolicy, path: Path, reason: str, image_id: int, annotations: Path
) -> Event:
    """The ``bad_image`` event of an unreadable image file, or, under ``policy="error"``, its
    :func:`bad_image_error` raised. The one rule of both paths, in training and evaluation."""
    if policy == "error":
        raise bad_image_error(path, reason, image_id, annotations) from None
    return ("bad_image", str(path), reason)


def size_events(path: Path, annotated: tuple[int, int], decoded: tuple[int, int]) -> list[Event]:
    """A ``size_mismatch`` event when the file's (height, width) is not the annotated one."""
    if annotated == decoded:
        return []
    detail = f"annotated {annotated[0]}x{annotated[1]}, file {decoded[0]}x{decoded[1]} (HxW)"
    return [("size_mismatch", str(path), detail)]


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


@dataclass
class SampleSource:
    """What a training map function needs: the annotations, the image folder, the run seed (each
    sample's generator is ``sample_rng(seed, epoch, position, attempt)``) and the augmentation and
    bad-image settings. Shared by the CPU path (``ssd_data.host.samples.TrainSampleFn``) and the
    device path (``ssd_data.device.samples.DeviceSampleFn``), so both draw the same decisions."""

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

    def draw(
        self,
        epoch: int,
        position: int,
        i: int,
        events: list[Event],
        attempt: Callable[[int, int, np.random.Generator, np.ndarray, np.ndarray], Drawn],
        first_attempt: int = 0,
    ) -> Drawn:
        """The sample of ``position``: ``attempt(i, attempt_number, rng, boxes, labels)`` for
        dataset image ``i`` (boxes float32[n, 4] ltrb normalised, labels int64[n]); when it
        raises :class:`UnreadableImage`, the image is recorded (or raised, by policy) and the
        next attempt uses an index drawn from the failed attempt's stream."""
        for number in range(first_attempt, MAX_REPLACEMENTS + 1):
            rng = sample_rng(self.seed, epoch, position, number)
            boxes, labels, crowd = self.index.annotations(i)
            if not self.crowd_boxes:
                boxes, labels = boxes[~crowd], labels[~crowd]
            try:
                return attempt(i, number, rng, boxes, labels)
            except UnreadableImage as e:
                reason = e.reason
            self.record_unreadable(i, reason, events)
            i = int(rng.integers(self.index.num_images))
        raise self.too_many_unreadable(events)

    def record_unreadable(self, i: int, reason: str, events: list[Event]) -> None:
        """Count dataset image ``i`` as unreadable, or raise under ``policy="error"``."""
        image_id = self.index.image_id(i)
        events.append(
            unreadable_event(self.policy, self.path(i), reason, image_id, self.index.path)
        )

    def too_many_unreadable(self, events: list[Event]) -> BadImageError:
        """The error when every replacement of a sample was unreadable too."""
        last = f"{events[-1][1]}: {events[-1][2]}" if events else "?"
        return BadImageError(
            f"{MAX_REPLACEMENTS + 1} unreadable images in a row under {self.image_dir} (last: "
            f"{last}); is data.train_images the right folder?"
        )

    def fixed_boxes(
        self,
        i: int,
        decoded_hw: tuple[int, int],
        boxes: np.ndarray,
        labels: np.ndarray,
        events: list[Event],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The transformed ``boxes`` float32[k, 4] / ``labels`` int64[k] of image ``i`` cut or
        zero-padded to ``max_boxes`` rows (a ``dropped_boxes`` event when cut), plus a
        ``size_mismatch`` event when the file's size is not the annotated one."""
        path = self.path(i)
        events += size_events(path, self.index.image_size(i), decoded_hw)
        k = len(boxes)
        if k > self.max_boxes:
            events.append(("dropped_boxes", str(path), k - self.max_boxes))
            k = self.max_boxes
        boxes_out = np.zeros((self.max_boxes, 4), np.float32)
        labels_out = np.zeros(self.max_boxes, np.int64)
        boxes_out[:k] = boxes[:k]
        labels_out[:k] = labels[:k]
        return boxes_out, labels_out
