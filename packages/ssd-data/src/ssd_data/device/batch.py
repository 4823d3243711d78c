"""The encoded batch of the device input path and the collate building it (main process).

The loader workers hand over :class:`~ssd_data.device.samples.EncodedSample` objects; the
collate copies their bytes into ONE buffer (pinned when asked, i.e. when CUDA is available) and
hands the decoder per-image views of it, so pinning costs one allocation per batch, not one per
image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ssd_data.device.plan import with_plan
from ssd_data.device.samples import EncodedSample
from ssd_data.samples.batch import stack_targets
from ssd_data.samples.loop import Event


class EncodedBatch(NamedTuple):
    """One step's input before decoding (N = batch size, M = data.max_boxes, P = NUM_PARAMS).

    data: N uint8[bytes_i] tensors, the JPEG files, views of one (pinned) buffer;
    params: float32[N, NUM_COLUMNS] the crop/flip/jitter decisions (columns
    ``ssd_data.device.samples.P_*``) followed by the batch plan (``ssd_data.device.plan.C_*``):
    the ONE tensor that crosses to the device per batch (pinned, copied ``non_blocking``);
    boxes: float32[N, M, 4] ltrb normalised to the output; labels: int64[N, M], 0 = padding;
    image_ids: int64[N]; origins: int64[N, 5] (epoch, position, index, attempt, fallback).
    """

    data: list[torch.Tensor]
    params: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    image_ids: torch.Tensor
    origins: torch.Tensor


def byte_views(arrays: Sequence[np.ndarray], pin: bool) -> list[torch.Tensor]:
    """Copy uint8 arrays into one buffer (pinned if ``pin``); returns a 1-D view per array."""
    sizes = [len(a) for a in arrays]
    buffer = torch.empty(sum(sizes), dtype=torch.uint8, pin_memory=pin)
    flat = buffer.numpy()
    views, offset = [], 0
    for a, n in zip(arrays, sizes, strict=True):
        flat[offset : offset + n] = a
        views.append(buffer[offset : offset + n])
        offset += n
    return views


def collate_encoded(
    samples: Sequence[EncodedSample], pin: bool = False
) -> tuple[EncodedBatch, list[Event]]:
    """Stack samples into an :class:`EncodedBatch`; also returns the samples' events."""
    boxes, labels, image_ids, events = stack_targets(samples)
    batch = EncodedBatch(
        data=byte_views([s.data for s in samples], pin),
        params=torch.from_numpy(with_plan(np.stack([s.params for s in samples]))),
        boxes=boxes,
        labels=labels,
        image_ids=image_ids,
        origins=torch.tensor([s.origin for s in samples], dtype=torch.int64),
    )
    if pin:
        batch = EncodedBatch(batch.data, *(t.pin_memory() for t in batch[1:]))
    return batch, events


@dataclass(frozen=True)
class EncodedCollate:
    """Picklable collate of the device path (``pin``: pin the batch; only with CUDA)."""

    pin: bool = False

    def __call__(self, samples: Sequence[EncodedSample]) -> tuple[EncodedBatch, list[Event]]:
        return collate_encoded(samples, self.pin)
