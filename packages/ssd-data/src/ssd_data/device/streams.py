"""Ordering the JPEG decode against the device work that reads its output (CUDA).

torchvision's CUDA ``decode_jpeg`` runs nvJPEG on the decoder's own stream and only makes the
caller's stream wait for it AFTER decoding; it does not wait for the caller's stream BEFORE it
writes. Its output tensors come from the caching allocator of the caller's current stream, which
hands out a freed block at once for work on the same stream, trusting stream order: a block that
the previous batch's augmentation kernels (still queued) read could be overwritten by nvJPEG
while they run. Silent image corruption.

So :class:`DecodeStreams` decodes with a dedicated decode stream as the current stream:

1. before decoding, the decode stream waits for the work stream (the consumers of the previous
   batch's decoded images), so anything ordered on the decode stream starts after them;
2. the output blocks come from the decode stream's own pool, which holds only blocks of earlier
   decoded images (nothing else is allocated there);
3. every decoded image is marked as used by the work stream (``Tensor.record_stream``): when the
   image is freed, the allocator gives its block back to the decode stream only once the work
   stream has passed the point of the free (an event it queries, no host wait); nvJPEG
   therefore never writes into a block a queued kernel still reads;
4. after decoding, the work stream waits for the decode stream (the images are complete).

The streams are passed in (and ``use`` makes one current), so the order of these calls is
tested with stand-in stream objects on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import torch


class Stream(Protocol):
    """What :class:`DecodeStreams` needs of a stream (``torch.cuda.Stream``)."""

    def wait_stream(self, stream: Any) -> None: ...


T = TypeVar("T")


class DecodeStreams:
    """Runs decodes on ``decode`` for work on ``work`` (see the module docs)."""

    def __init__(
        self,
        decode: Stream,
        work: Stream,
        use: Callable[[Any], AbstractContextManager[Any]] = torch.cuda.stream,
    ) -> None:
        self.decode_stream, self.work_stream, self._use = decode, work, use

    def decode(self, fn: Callable[[], list[T | None]]) -> list[T | None]:
        """``fn()`` (returning decoded tensors, None for a failure) ordered as the module docs
        say; the tensors are recorded as used by the work stream."""
        self.decode_stream.wait_stream(self.work_stream)  # 1: after the previous consumers
        with self._use(self.decode_stream):  # 2: outputs from the decode stream's pool
            images = fn()
        for image in images:  # 3: no reuse of their blocks before the work stream is done
            if image is not None:
                image.record_stream(self.work_stream)  # type: ignore[attr-defined]
        self.work_stream.wait_stream(self.decode_stream)  # 4: the work sees finished images
        return images
