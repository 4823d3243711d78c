"""Evaluation on the device: the loader workers read the val JPEG bytes, the device decodes and
resizes them to 300x300 in batches, with the CPU evaluation path's pixels.

The CPU path (:func:`ssd_data.host.augment.resize_eval`) decodes with PIL and resizes the whole
image with PIL's bilinear filter; here the same resize is the device path's batched
:func:`~ssd_data.device.resize.crop_flip_resize` with the whole image as the crop and no flip
(PIL's arithmetic, exact up to PIL's pass-order choice). Images the CPU path decodes in JPEG
draft mode (``augment_impl=fast`` and both sides >= 600 pixels: DCT-domain downscaling, which no
device decoder does), CMYK and non-JPEG files, and files the device decoder rejects are decoded
with PIL exactly as the CPU path decodes them, then resized on the device like the others.
Unreadable files follow ``data.bad_image_policy`` as in the CPU path: 'error' raises
:class:`~ssd_data.errors.BadImageError`, 'skip' leaves the image out of the batch (a host-side
selection: the rare bad-file case only) with a ``bad_image`` event.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ssd_data.coco import CocoIndex
from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS
from ssd_data.device.augment import decode_jpegs
from ssd_data.device.batch import byte_views
from ssd_data.device.plan import C_RESIZE_ORDER, num_vertical, with_plan
from ssd_data.device.resize import crop_flip_resize, pad_images
from ssd_data.device.samples import (
    NUM_PARAMS,
    P_BOTTOM,
    P_FLIP,
    P_HEIGHT,
    P_HOST_DECODE,
    P_LEFT,
    P_RIGHT,
    P_WIDTH,
    read_encoded,
)
from ssd_data.device.streams import DecodeStreams
from ssd_data.errors import UnreadableImage
from ssd_data.host.decode import load_rgb, open_image
from ssd_data.samples.batch import EvalBatch
from ssd_data.samples.loop import (
    OUTPUT_SIZE,
    AugmentImpl,
    BadImagePolicy,
    Event,
    size_events,
    unreadable_event,
)


@dataclass
class EncodedEvalSample:
    """One val image before decoding: ``data`` uint8[bytes] the file; ``params`` float32
    [NUM_PARAMS] (crop = the whole decoded image, its size, whether the host decodes it);
    ``image_id``; ``size`` annotated (height, width); ``path`` the file; ``data`` is None for
    a missing or unrecognised file (skipped, with its ``bad_image`` event)."""

    data: np.ndarray | None
    params: np.ndarray
    image_id: int
    size: tuple[int, int]
    path: str
    events: list[Event] = field(default_factory=list)


def _draft_hw(data: np.ndarray, hw: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) PIL's JPEG draft mode decodes at for a 300x300 output (what
    ``resize_eval(impl="fast")`` does; ``hw`` when it does not downscale)."""
    if min(hw) < 2 * OUTPUT_SIZE:  # draft scales by 1/2, 1/4, 1/8: only from 600 pixels up
        return hw
    image = open_image(io.BytesIO(data), None)  # type: ignore[arg-type]  # size checked
    if image.format == "JPEG":
        image.draft("RGB", (OUTPUT_SIZE, OUTPUT_SIZE))
    return image.size[1], image.size[0]


@dataclass
class DeviceEvalSampleFn:
    """(epoch, position, dataset index) -> :class:`EncodedEvalSample` (the device path's
    evaluation map function; reads bytes and the header only)."""

    index: CocoIndex
    image_dir: Path
    impl: AugmentImpl = "fast"
    policy: BadImagePolicy = "skip"
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS  # data.max_image_pixels

    def __call__(self, item: tuple[int, int, int]) -> EncodedEvalSample:
        _, _, i = item
        path = self.image_dir / self.index.file_name(i)
        image_id, size = self.index.image_id(i), self.index.image_size(i)
        params = np.zeros(NUM_PARAMS, np.float32)
        try:
            data, hw, host_decode = read_encoded(path, self.max_pixels)
        except UnreadableImage as e:
            event = unreadable_event(self.policy, path, e.reason, image_id, self.index.path)
            return EncodedEvalSample(None, params, image_id, size, str(path), [event])
        decoded = _draft_hw(data, hw) if self.impl == "fast" else hw
        params[P_RIGHT], params[P_BOTTOM] = decoded[1], decoded[0]  # the whole image
        params[P_HEIGHT], params[P_WIDTH] = decoded
        params[P_HOST_DECODE] = float(host_decode or decoded != hw)
        return EncodedEvalSample(
            data, params, image_id, size, str(path), size_events(path, size, hw)
        )


class EncodedEvalBatch(NamedTuple):
    """Val images before decoding (N readable images): ``data`` N uint8[bytes_i] views of one
    (pinned) buffer; ``params`` float32[N, NUM_COLUMNS] whole-image crops with the batch plan
    (:mod:`ssd_data.device.plan`); ``image_ids`` int64[N]; ``sizes`` int64[N, 2] annotated
    (height, width); ``paths`` the files (for messages)."""

    data: list[torch.Tensor]
    params: torch.Tensor
    image_ids: torch.Tensor
    sizes: torch.Tensor
    paths: list[str]


@dataclass(frozen=True)
class EncodedEvalCollate:
    """Picklable collate of the device evaluation path (``pin``: pin the batch; CUDA only):
    the readable samples as an :class:`EncodedEvalBatch` (None if none), and the events."""

    pin: bool = False

    def __call__(
        self, samples: Sequence[EncodedEvalSample]
    ) -> tuple[EncodedEvalBatch | None, list[Event]]:
        events = [e for s in samples for e in s.events]
        ok = [s for s in samples if s.data is not None]
        if not ok:
            return None, events
        params = torch.from_numpy(with_plan(np.stack([s.params for s in ok])))
        ids = torch.from_numpy(np.array([s.image_id for s in ok], np.int64))
        sizes = torch.from_numpy(np.array([s.size for s in ok], np.int64).reshape(len(ok), 2))
        if self.pin:
            params, ids, sizes = params.pin_memory(), ids.pin_memory(), sizes.pin_memory()
        data = byte_views([s.data for s in ok], self.pin)  # type: ignore[misc]
        return EncodedEvalBatch(data, params, ids, sizes, [s.path for s in ok]), events


def pil_decode_eval(data: torch.Tensor, path: Path, impl: AugmentImpl) -> torch.Tensor:
    """Decode as :func:`ssd_data.host.augment.resize_eval` does (PIL; draft mode with
    ``impl="fast"``) -> uint8 [3, H, W] (CPU). Raises :class:`UnreadableImage`."""
    try:
        # the header's size was checked by read_encoded (data.max_image_pixels)
        image = open_image(io.BytesIO(data.numpy().tobytes()), None)  # type: ignore[arg-type]
        size = (OUTPUT_SIZE, OUTPUT_SIZE) if impl == "fast" else None
        rgb = load_rgb(image, path, size)
    except UnreadableImage as e:
        raise UnreadableImage(path, e.reason) from None
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


class DeviceEvalResizer:
    """EncodedEvalBatch -> (EvalBatch on ``device`` or None, events): decode + resize to
    300x300 (uint8 [N, 3, 300, 300], channels_last unless ``channels_last`` is False), a
    constant number of operations per batch (the decode aside), no host sync in the steady
    state; the bad-file cases of the module docs aside."""

    def __init__(
        self,
        device: torch.device | str,
        impl: AugmentImpl = "fast",
        channels_last: bool = True,
        policy: BadImagePolicy = "skip",
        annotations: Path | None = None,
    ) -> None:
        self.device, self.impl, self.channels_last = torch.device(device), impl, channels_last
        self.policy, self.annotations = policy, annotations or Path("annotations")
        self._decode_stream: torch.cuda.Stream | None = None

    def __call__(self, batch: EncodedEvalBatch) -> tuple[EvalBatch | None, list[Event]]:
        events: list[Event] = []
        images, keep = self._decode(batch, events)
        if len(keep) < len(images):  # a file neither decoder reads, skipped (rare: syncs)
            if not keep:
                return None, events
            index = torch.tensor(keep, dtype=torch.int64)
            params = torch.from_numpy(with_plan(batch.params.numpy()[keep]))
            batch = EncodedEvalBatch(
                [batch.data[k] for k in keep],
                params,
                batch.image_ids.index_select(0, index),
                batch.sizes.index_select(0, index),
                [batch.paths[k] for k in keep],
            )
            images = [images[k] for k in keep]
        host = batch.params.numpy()
        decisions = batch.params.to(self.device, non_blocking=True)  # the one copy per batch
        order = decisions[:, C_RESIZE_ORDER].to(torch.int64)
        crops = decisions[:, P_LEFT : P_FLIP + 1]
        out = crop_flip_resize(pad_images(images), crops, order, num_vertical(host))  # type: ignore[arg-type]
        pixels = out.to(torch.uint8)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        ids = batch.image_ids.to(self.device, non_blocking=True)
        sizes = batch.sizes.to(self.device, non_blocking=True)
        return EvalBatch(pixels, ids, sizes), events

    def _decode(
        self, batch: EncodedEvalBatch, events: list[Event]
    ) -> tuple[list[torch.Tensor | None], list[int]]:
        """Decoded images (None: unreadable, skipped) and the indices of the readable ones."""
        host = batch.params.numpy()
        on_device = [k for k in range(len(host)) if not host[k, P_HOST_DECODE]]
        data = [batch.data[k] for k in on_device]
        if self.device.type == "cuda":
            if self._decode_stream is None:
                self._decode_stream = torch.cuda.Stream(device=self.device)
            streams = DecodeStreams(self._decode_stream, torch.cuda.current_stream(self.device))
            decoded = streams.decode(lambda: decode_jpegs(data, self.device))
        else:
            decoded = decode_jpegs(data, self.device)
        images: list[torch.Tensor | None] = [None] * len(host)
        for k, image in zip(on_device, decoded, strict=True):
            size = (int(host[k, P_HEIGHT]), int(host[k, P_WIDTH]))
            if image is not None and tuple(image.shape[1:]) == size:
                images[k] = image
        keep = []
        for k, image in enumerate(images):
            if image is None:
                images[k] = self._pil(batch, k, events)
            if images[k] is not None:
                keep.append(k)
        return images, keep

    def _pil(self, batch: EncodedEvalBatch, k: int, events: list[Event]) -> torch.Tensor | None:
        path = Path(batch.paths[k])
        try:
            image = pil_decode_eval(batch.data[k], path, self.impl)
        except UnreadableImage as e:
            image_id = int(batch.image_ids[k])  # the rare fallback path: a host read
            events.append(unreadable_event(self.policy, path, e.reason, image_id, self.annotations))
            return None
        if self.device.type == "cuda":  # pinned: the copy does not block
            image = image.contiguous().pin_memory()
        return image.to(self.device, non_blocking=True)
