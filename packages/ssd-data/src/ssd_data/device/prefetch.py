"""Run the device augmentation one batch ahead on a side CUDA stream (a plain map on the CPU).

:func:`device_batches` wraps the loader's ``(EncodedBatch, events)`` stream into a
``(TrainBatch, events)`` stream. On CUDA, batch k+1 is decoded and augmented on a side stream
right before batch k is handed over, so its kernels overlap the training step of batch k on
the main stream; the consumer's current stream waits for the side stream's event of the batch it
receives, and the batch's tensors are marked as used on the consumer's stream
(``record_stream``) so the caching allocator never reuses them too early. Nothing to close: the
pending batch is dropped with the generator (the loader's position counts handed-over batches
only, so a resume is exact).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ssd_data.device.augment import DeviceAugmenter
from ssd_data.device.batch import EncodedBatch
from ssd_data.samples.batch import TrainBatch
from ssd_data.samples.loop import Event


def device_batches(
    source: Iterable[tuple[EncodedBatch, list[Event]]], augmenter: DeviceAugmenter
) -> Iterator[tuple[TrainBatch, list[Event]]]:
    """``(TrainBatch on the augmenter's device, events)`` for every encoded batch of
    ``source``, in order; one batch ahead on a side stream on CUDA."""
    device = augmenter.device
    if device.type != "cuda":
        for encoded, events in source:
            batch, more = augmenter(encoded)
            yield batch, events + more
        return
    side = torch.cuda.Stream(device=device)
    pending: tuple[TrainBatch, list[Event], torch.cuda.Event] | None = None
    for encoded, events in source:
        with torch.cuda.stream(side):
            batch, more = augmenter(encoded)
            ready = torch.cuda.Event()
            ready.record(side)
        if pending is not None:
            yield _hand_over(*pending, device)
        pending = (batch, events + more, ready)
    if pending is not None:
        yield _hand_over(*pending, device)


def _hand_over(
    batch: TrainBatch, events: list[Event], ready: torch.cuda.Event, device: torch.device
) -> tuple[TrainBatch, list[Event]]:
    stream = torch.cuda.current_stream(device)
    stream.wait_event(ready)
    for tensor in batch:
        tensor.record_stream(stream)
    return batch, events
