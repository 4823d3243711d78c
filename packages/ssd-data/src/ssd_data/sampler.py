"""The source nodes of both pipelines: this rank's samples, as dataset positions.

Epoch ``e`` is a permutation of all N images drawn from ``(seed, e)`` (training) or the file
order (evaluation). Rank ``r`` of ``W`` takes global positions ``r, r + W, r + 2W, ...`` (as
torch's DistributedSampler does), so ranks are disjoint and together cover the epoch.

Training (:class:`StreamSampler`) follows NVIDIA's v0.7 reader: each rank's shard of an epoch
holds ``S = N // W`` images (slots ``q = 0 .. S-1``, global positions ``r + q*W``), and the
epochs are consumed as one endless stream that never drops a sample: stream sample ``p``
(0-based, per rank) is slot ``p % S`` of epoch ``p // S``. Batch ``b`` holds stream samples
``b*B .. b*B + B - 1``, so the last batch of an epoch is filled from the next epoch's order and
epoch ``e`` starts at batch ``ceil(e*S / B)`` (:class:`EpochClock`).

Each item is ``(epoch, global position, dataset index)``; the position, not the worker that
happens to process it, seeds the sample's random stream, so a sample is a pure function of its
stream position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torchdata.nodes import BaseNode


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """int64[N]: the shuffled order of epoch ``epoch`` (the same on every rank)."""
    return np.random.default_rng([seed % 2**63, epoch, 0x5EED]).permutation(num_samples)


@dataclass(frozen=True)
class EpochClock:
    """Epoch <-> batch arithmetic of the never-dropping stream (pure integers, no data).

    ``shard_size`` S: images per rank and epoch (``num_samples // world_size``);
    ``batch_size`` B: images per rank and batch. Batches and epochs are 0-based.

    >>> clock = EpochClock(shard_size=117266 // 8, batch_size=114)  # NVIDIA DGX A100, 8 x 114
    >>> [clock.epoch_start_batch(e) for e in (1, 2, 3)]
    [129, 258, 386]
    """

    shard_size: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.batch_size < 1:
            raise ValueError(
                f"shard_size and batch_size must be >= 1, got {self.shard_size}, {self.batch_size}"
            )

    def epoch_start_batch(self, epoch: int) -> int:
        """The first batch whose first sample belongs to ``epoch``: ``ceil(e*S / B)`` (for
        S >= B). Unless B divides e*S, the batch before it straddles the boundary: it ends
        with the first samples of ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return -(-epoch * self.shard_size // self.batch_size)

    def epoch_of_batch(self, batch: int) -> int:
        """The epoch of batch ``batch``'s first sample: ``(b*B) // S``."""
        if batch < 0:
            raise ValueError(f"batch must be >= 0, got {batch}")
        return batch * self.batch_size // self.shard_size

    def locate(self, sample: int) -> tuple[int, int]:
        """(epoch, shard slot) of stream sample ``sample`` (0-based, per rank)."""
        return divmod(sample, self.shard_size)


class StreamSampler(BaseNode[tuple[int, int, int]]):
    """Endless training stream of one rank: yields ``(epoch, position, index)`` for stream
    samples ``start, start + 1, ...`` (see the module doc); never raises StopIteration.

    Set ``start`` (stream samples of this rank already consumed) before ``reset()``; the node's
    state is just ``{"next"}``.
    """

    def __init__(
        self, num_samples: int, rank: int, world_size: int, shard_size: int, seed: int
    ) -> None:
        super().__init__()
        if not 1 <= shard_size <= num_samples // world_size:
            raise ValueError(f"shard_size {shard_size} is not in 1..{num_samples // world_size}")
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.shard_size, self.seed = shard_size, seed
        self.start = 0
        self._next = 0
        self._order = np.arange(0)
        self._order_epoch = -1

    def reset(self, initial_state: dict[str, Any] | None = None) -> None:
        super().reset(initial_state)
        self._next = int(initial_state["next"]) if initial_state is not None else self.start

    def item(self, sample: int) -> tuple[int, int, int]:
        """``(epoch, global position, dataset index)`` of stream sample ``sample``."""
        epoch, slot = divmod(sample, self.shard_size)
        if epoch != self._order_epoch:
            self._order = epoch_permutation(self.num_samples, self.seed, epoch)
            self._order_epoch = epoch
        position = self.rank + slot * self.world_size
        return epoch, position, int(self._order[position])

    def next(self) -> tuple[int, int, int]:
        out = self.item(self._next)
        self._next += 1
        return out

    def get_state(self) -> dict[str, Any]:
        return {"next": self._next}


class ShardSampler(BaseNode[tuple[int, int, int]]):
    """Yields ``(epoch, position, index)`` for rank ``rank``'s ``per_rank`` samples of one
    epoch, then stops (the evaluation source: ``shuffle=False`` gives the file order).

    Set ``epoch`` and ``start`` (samples of this rank already consumed) before ``reset()``;
    the node's state is just ``{"epoch", "next"}``.
    """

    def __init__(
        self, num_samples: int, rank: int, world_size: int, per_rank: int, seed: int, shuffle: bool
    ) -> None:
        super().__init__()
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.per_rank, self.seed, self.shuffle = per_rank, seed, shuffle
        self.epoch = 0
        self.start = 0
        self._next = 0
        self._order: np.ndarray | None = None
        self._order_epoch = -1

    def reset(self, initial_state: dict[str, Any] | None = None) -> None:
        super().reset(initial_state)
        if initial_state is not None:
            self.epoch, self._next = int(initial_state["epoch"]), int(initial_state["next"])
        else:
            self._next = self.start
        if self.shuffle and self._order_epoch != self.epoch:
            self._order = epoch_permutation(self.num_samples, self.seed, self.epoch)
            self._order_epoch = self.epoch

    def next(self) -> tuple[int, int, int]:
        if self._next >= self.per_rank:
            raise StopIteration
        position = self.rank + self._next * self.world_size
        index = int(self._order[position]) if self._order is not None else position
        self._next += 1
        return self.epoch, position, index

    def get_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next": self._next}
