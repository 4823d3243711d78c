"""Host side of the device input path: file bytes and every random decision, no decoding.

:class:`DeviceSampleFn` is the device path's map function (it runs in the loader workers, like
:class:`~ssd_data.host.samples.TrainSampleFn`). Per sample it reads the file's bytes, parses only
the image header (PIL, lazily: format, mode, width, height) and draws the crop, flip and colour
jitter from the SAME per-(seed, epoch, position, attempt) stream
(:func:`~ssd_data.host.samples.sample_rng`), with the same functions and in the same order as
:func:`ssd_data.host.augment.augment_train` (:func:`~ssd_data.samples.crop.sample_crop`, ``rng.random() <
0.5``, :func:`~ssd_data.host.color.sample_jitter`). Boxes and labels are transformed here exactly as
the CPU path does, so the two paths give bit-identical boxes, labels and image ids.

Unreadable files:
- missing / not an image (the header cannot be parsed): handled here exactly as the CPU path
  (replacement index drawn right away from the attempt's stream, ``bad_image`` event);
- readable header but corrupt data (only the decoder finds out): the device side
  (:mod:`ssd_data.device.augment`) retries the decode on the CPU with PIL and, if that fails too,
  asks :meth:`DeviceSampleFn.replace` for the sample the CPU path would have used instead. The
  CPU path draws that replacement index after the crop/flip/jitter draws of the failed attempt;
  the host draws it at the same point of the stream and ships it as ``fallback_index``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS
from ssd_data.errors import UnreadableImage
from ssd_data.host.decode import open_image
from ssd_data.samples.crop import crop_pixels, flip_boxes, sample_crop
from ssd_data.samples.jitter import sample_jitter
from ssd_data.samples.loop import MAX_REPLACEMENTS, Event, SampleSource

#: Columns of the parameter vector of one sample (float32, see :class:`EncodedSample`).
P_LEFT, P_TOP, P_RIGHT, P_BOTTOM = (
    0,
    1,
    2,
    3,
)  # crop in pixels of the decoded image, right/bottom exclusive
P_FLIP = 4  # 1.0: mirror left-right
P_BRIGHTNESS, P_CONTRAST, P_SATURATION, P_HUE = 5, 6, 7, 8  # jitter factors
P_ORDER = 9  # 9..12: the jitter order, a permutation of 0..3 (color.BRIGHTNESS ... color.HUE)
P_HEIGHT, P_WIDTH = 13, 14  # the file's size from its header
P_HOST_DECODE = 15  # 1.0: not a JPEG the device decoder handles: decode with PIL on the CPU
P_HUE_SHIFT = 16  # the reference's 8-bit hue shift, int32(hue * 255) mod 256 (exact, from float64)
NUM_PARAMS = 17


@dataclass
class EncodedSample:
    """One training sample before decoding.

    ``data`` uint8[bytes] the file's bytes; ``params`` float32[NUM_PARAMS] (columns ``P_*``);
    ``boxes`` float32[M, 4] ltrb normalised to the output, zero-padded; ``labels`` int64[M],
    0 = padding; ``image_id`` COCO id; ``origin`` (epoch, position, dataset index, attempt,
    fallback index) to rebuild the CPU path's replacement; ``events`` as in
    :mod:`ssd_data.host.samples`.
    """

    data: np.ndarray
    params: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    origin: tuple[int, int, int, int, int]
    events: list[Event] = field(default_factory=list)


def read_encoded(
    path: Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, tuple[int, int], bool]:
    """The bytes of ``path`` (uint8[n], writable), the header's (height, width), and whether the
    file needs the CPU decoder (not a JPEG, or a JPEG mode the device decoders may not take:
    anything but RGB/YCbCr and greyscale). Raises :class:`UnreadableImage` like
    :func:`ssd_data.host.decode.open_image` (missing file, unrecognised format, a header declaring
    more than ``max_pixels`` pixels: checked here, before any decoder sees the bytes)."""
    try:
        with open(path, "rb") as f:
            data = np.empty(path.stat().st_size, np.uint8)
            f.readinto(memoryview(data))
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    try:
        image = open_image(io.BytesIO(data), max_pixels)  # type: ignore[arg-type]  # header only
    except UnreadableImage as e:
        raise UnreadableImage(path, e.reason) from None
    host_decode = image.format != "JPEG" or image.mode not in ("RGB", "L")
    return data, (image.size[1], image.size[0]), host_decode


@dataclass
class DeviceSampleFn(SampleSource):
    """(epoch, position, dataset index) -> :class:`EncodedSample` (device path's map function).

    The fields of :class:`~ssd_data.host.samples.SampleSource`, as the CPU path's; ``impl`` only
    matters on the device (which colour jitter); decisions do not depend on it.
    """

    def __call__(self, item: tuple[int, int, int]) -> EncodedSample:
        epoch, position, i = item
        return self.sample(epoch, position, i, 0, [])

    def sample(
        self, epoch: int, position: int, i: int, first_attempt: int, events: list[Event]
    ) -> EncodedSample:
        """The sample of ``position`` from attempt ``first_attempt`` on, starting at dataset
        index ``i`` (the shared sample loop, reading bytes and drawing decisions, no decoding)."""

        def attempt(
            i: int, number: int, rng: np.random.Generator, boxes: np.ndarray, labels: np.ndarray
        ) -> EncodedSample:
            data, hw, host_decode = read_encoded(self.path(i), self.max_pixels)
            return self._decide(
                data, hw, host_decode, boxes, labels, rng, i, events, (epoch, position, number)
            )

        return self.draw(epoch, position, i, events, attempt, first_attempt)

    def replace(self, origin: tuple[int, int, int, int, int], events: list[Event]) -> EncodedSample:
        """The sample the CPU path uses when the image of ``origin`` cannot be decoded
        (the caller has recorded or raised the ``bad_image`` event)."""
        epoch, position, _, attempt, fallback = origin
        if attempt >= MAX_REPLACEMENTS:
            raise self.too_many_unreadable(events)
        return self.sample(epoch, position, fallback, attempt + 1, events)

    def _decide(
        self,
        data: np.ndarray,
        hw: tuple[int, int],
        host_decode: bool,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
        i: int,
        events: list[Event],
        item: tuple[int, int, int],
    ) -> EncodedSample:
        # The draws of augment_train, in its order: crop, flip, jitter.
        crop = sample_crop(boxes, rng, self.crop_attempts)
        flip = bool(rng.random() < 0.5)
        jitter = sample_jitter(rng, hue=self.hue)
        # What TrainSampleFn draws next if the decode then fails.
        fallback = int(rng.integers(self.index.num_images))
        out_boxes = (flip_boxes(crop.boxes) if flip else crop.boxes).astype(np.float32)
        out_labels = labels[crop.keep]
        height, width = hw
        rect = (
            crop_pixels(crop.rect, width, height)
            if crop.rect is not None
            else (0, 0, width, height)
        )
        params = np.zeros(NUM_PARAMS, np.float32)
        params[P_LEFT : P_BOTTOM + 1] = rect
        params[P_FLIP] = float(flip)
        params[P_BRIGHTNESS : P_HUE + 1] = (
            jitter.brightness,
            jitter.contrast,
            jitter.saturation,
            jitter.hue,
        )
        params[P_ORDER : P_ORDER + 4] = jitter.order
        params[P_HEIGHT], params[P_WIDTH] = height, width
        params[P_HOST_DECODE] = float(host_decode)
        params[P_HUE_SHIFT] = int(np.int32(jitter.hue * 255)) % 256
        boxes_out, labels_out = self.fixed_boxes(i, hw, out_boxes, out_labels, events)
        epoch, position, attempt = item
        origin = (epoch, position, i, attempt, fallback)
        return EncodedSample(
            data, params, boxes_out, labels_out, self.index.image_id(i), origin, events
        )
