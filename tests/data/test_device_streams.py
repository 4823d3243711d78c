"""The order of the waits around the side-stream JPEG decode (ssd_data.device.streams), with
stand-in stream objects that log what is asked of them (the logic is the same on CUDA)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ssd_data.device.streams import DecodeStreams


class _Stream:
    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name, self.log = name, log

    def wait_stream(self, other: _Stream) -> None:
        self.log.append(("wait", self.name, other.name))


class _Image:
    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name, self.log = name, log

    def record_stream(self, stream: _Stream) -> None:
        self.log.append(("used by", self.name, stream.name))


def test_decode_waits_for_the_previous_consumers_and_hands_its_images_to_the_work_stream() -> None:
    log: list[tuple[str, ...]] = []
    decode, work = _Stream("decode", log), _Stream("work", log)

    @contextmanager
    def use(stream: _Stream) -> Iterator[None]:
        log.append(("current", stream.name))
        yield
        log.append(("current", "previous"))

    def decode_batch(k: int) -> list[_Image | None]:
        log.append(("decode", str(k)))
        return [_Image(f"{k}a", log), None, _Image(f"{k}c", log)]  # None: the decoder failed

    streams = DecodeStreams(decode, work, use)
    for k in range(2):
        images = streams.decode(lambda k=k: decode_batch(k))
        assert [i.name if i else None for i in images] == [f"{k}a", None, f"{k}c"]
    one_batch = [
        ("wait", "decode", "work"),  # after the kernels that read the previous batch
        ("current", "decode"),  # outputs allocated from the decode stream's pool
        ("decode", "{k}"),
        ("current", "previous"),
        ("used by", "{k}a", "work"),  # blocks not reused before the work stream is done
        ("used by", "{k}c", "work"),
        ("wait", "work", "decode"),  # the augmentation sees complete images
    ]
    expected = [tuple(x.format(k=k) for x in entry) for k in range(2) for entry in one_batch]
    assert log == expected
