"""Batch types handed to the trainer (interfaces.md) and the collate functions building them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch

from ssd_data.samples.loop import EvalSample, Event, TrainSample


class TrainBatch(NamedTuple):
    """One training step's input, fixed shapes (N = batch size, M = data.max_boxes).

    images: uint8[N, 3, 300, 300] augmented RGB, not normalised (a channels_last view of an
    NHWC buffer unless data.channels_last is False);
    boxes: float32[N, M, 4] ltrb normalised to [0, 1]; labels: int64[N, M], 0 = padding;
    image_ids: int64[N] COCO image ids.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    image_ids: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainBatch:
        """The batch on ``device`` (memory format kept)."""
        return TrainBatch(*(t.to(device, non_blocking=non_blocking) for t in self))


class EvalBatch(NamedTuple):
    """One evaluation batch: images uint8[N, 3, 300, 300] (resize only, channels_last like
    training), image_ids int64[N],
    sizes int64[N, 2] original (height, width). N may be smaller than the batch size."""

    images: torch.Tensor
    image_ids: torch.Tensor
    sizes: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EvalBatch:
        """The batch on ``device`` (memory format kept)."""
        return EvalBatch(*(t.to(device, non_blocking=non_blocking) for t in self))


def stack_images(images: Sequence[np.ndarray], channels_last: bool = True) -> torch.Tensor:
    """uint8[H, W, 3] arrays -> uint8[N, 3, H, W] (channels_last view, or contiguous NCHW)."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return batch if channels_last else batch.contiguous()


class HasTargets(Protocol):
    """What both paths' training samples carry besides the image (pixels or bytes)."""

    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    events: list[Event]


def stack_targets(
    samples: Sequence[HasTargets],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[Event]]:
    """The training targets of both input paths: ``boxes`` float32[N, M, 4], ``labels``
    int64[N, M], ``image_ids`` int64[N], and the samples' events in order."""
    return (
        torch.from_numpy(np.stack([s.boxes for s in samples])),
        torch.from_numpy(np.stack([s.labels for s in samples])),
        torch.tensor([s.image_id for s in samples], dtype=torch.int64),
        [e for s in samples for e in s.events],
    )


@dataclass(frozen=True)
class TrainCollate:
    """Stack samples into a :class:`TrainBatch`; also returns the samples' events."""

    channels_last: bool = True

    def __call__(self, samples: Sequence[TrainSample]) -> tuple[TrainBatch, list[Event]]:
        return collate_train(samples, self.channels_last)


@dataclass(frozen=True)
class EvalCollate:
    """Stack readable samples into an :class:`EvalBatch` (None if none); also the events."""

    channels_last: bool = True

    def __call__(self, samples: Sequence[EvalSample]) -> tuple[EvalBatch | None, list[Event]]:
        return collate_eval(samples, self.channels_last)


def collate_train(
    samples: Sequence[TrainSample], channels_last: bool = True
) -> tuple[TrainBatch, list[Event]]:
    """Stack samples into a :class:`TrainBatch`; also returns the samples' events."""
    boxes, labels, image_ids, events = stack_targets(samples)
    images = stack_images([s.image for s in samples], channels_last)
    return TrainBatch(images, boxes, labels, image_ids), events


def collate_eval(
    samples: Sequence[EvalSample], channels_last: bool = True
) -> tuple[EvalBatch | None, list[Event]]:
    """Stack the readable samples into an :class:`EvalBatch` (None if none is readable)."""
    events = [e for s in samples for e in s.events]
    ok = [s for s in samples if s.image is not None]
    if not ok:
        return None, events
    batch = EvalBatch(
        images=stack_images([s.image for s in ok], channels_last),
        image_ids=torch.tensor([s.image_id for s in ok], dtype=torch.int64),
        sizes=torch.tensor([s.size for s in ok], dtype=torch.int64).reshape(len(ok), 2),
    )
    return batch, events
