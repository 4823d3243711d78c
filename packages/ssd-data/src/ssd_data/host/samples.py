"""Map functions of the CPU input path: dataset position -> one transformed, fixed-shape sample
with its pixels (decoded and augmented with PIL in the loader workers).

Both run the shared sample loop of :mod:`ssd_data.samples.loop` (random stream, replacement of
unreadable images, box dropping and padding); only the pixel work is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssd_data.coco import CocoIndex
from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS
from ssd_data.errors import UnreadableImage
from ssd_data.host.augment import Augmented, augment_train, resize_eval
from ssd_data.samples.loop import (
    AugmentImpl,
    BadImagePolicy,
    EvalSample,
    Event,
    SampleSource,
    TrainSample,
    size_events,
    unreadable_event,
)


@dataclass
class TrainSampleFn(SampleSource):
    """(epoch, position, dataset index) -> :class:`TrainSample` (the training map function)."""

    def __call__(self, item: tuple[int, int, int]) -> TrainSample:
        epoch, position, i = item
        events: list[Event] = []

        def attempt(
            i: int, _: int, rng: np.random.Generator, boxes: np.ndarray, labels: np.ndarray
        ) -> tuple[int, Augmented]:
            aug = augment_train(
                self.path(i),
                boxes,
                labels,
                rng,
                crop_attempts=self.crop_attempts,
                hue=self.hue,
                impl=self.impl,
                max_pixels=self.max_pixels,
            )
            return i, aug

        i, aug = self.draw(epoch, position, i, events, attempt)
        boxes, labels = self.fixed_boxes(i, aug.decoded_hw, aug.boxes, aug.labels, events)
        return TrainSample(aug.image, boxes, labels, self.index.image_id(i), events)


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
            event = unreadable_event(self.policy, path, e.reason, image_id, self.index.path)
            return EvalSample(None, image_id, size, [event])
        return EvalSample(image, image_id, size, size_events(path, size, decoded_hw))
