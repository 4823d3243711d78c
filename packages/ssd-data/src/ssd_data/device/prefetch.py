"""Run a device stage one batch ahead on a side CUDA stream (a plain map on the CPU).

:func:`device_batches` wraps the loader's ``(EncodedBatch, events)`` stream into a
``(TrainBatch, events)`` stream (training), or ``(EncodedEvalBatch, events)`` into
``(EvalBatch | None, events)`` (evaluation: inference of batch k overlaps the decode and
resize of batch k+1). On CUDA, batch k+1 is decoded and augmented on a side stream
right before batch k is handed over, so its kernels overlap the training step of batch k on
the main stream; the consumer's current stream waits for the side stream's event of the batch it
receives, and the batch's tensors are marked as used on the consumer's stream
(``record_stream``) so the caching allocator never reuses them too early. Nothing to close: the
pending batch is dropped with the generator (the loader's position counts handed-over batches
only, so a resume is exact).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

import torch

from ssd_data.samples.loop import Event

E = TypeVar("E")
B = TypeVar("B", bound=tuple)


class DeviceStage(Protocol[E, B]):
    """Encoded batch -> (batch of tensors on ``device``, events): the training augmenter
    (:class:`~ssd_data.device.augment.DeviceAugmenter`) or the evaluation resizer
    (:class:`~ssd_data.device.eval.DeviceEvalResizer`)."""

    device: torch.device

    def __call__(self, encoded: E) -> tuple[B, list[Event]]: ...


def device_batches(
    source: Iterable[tuple[E, list[Event]]], stage: DeviceStage[E, B] | Any
) -> Iterator[tuple[B, list[Event]]]:
    """``(batch on the stage's device, events)`` for every encoded batch of ``source``, in
    order; one batch ahead on a side stream on CUDA."""
    device = stage.device
    if device.type != "cuda":
        for encoded, events in source:
            batch, more = stage(encoded)
            yield batch, events + more
        return
    side = torch.cuda.Stream(device=device)
    pending: tuple[B, list[Event], torch.cuda.Event] | None = None
    for encoded, events in source:
        with torch.cuda.stream(side):
            batch, more = stage(encoded)
            ready = torch.cuda.Event()
            ready.record(side)
        if pending is not None:
            yield _hand_over(*pending, device)
        pending = (batch, events + more, ready)
    if pending is not None:
        yield _hand_over(*pending, device)


def _hand_over(
    batch: B, events: list[Event], ready: torch.cuda.Event, device: torch.device
) -> tuple[B, list[Event]]:
    stream = torch.cuda.current_stream(device)
    stream.wait_event(ready)
    for tensor in batch if batch is not None else ():
        tensor.record_stream(stream)
    return batch, events
