"""The source node of both pipelines: this rank's share of an epoch, as dataset positions.

Epoch ``e`` is a permutation of all N images drawn from ``(seed, e)`` (training) or the file
order (evaluation). Rank ``r`` of ``W`` takes global positions ``r, r + W, r + 2W, ...`` (as
torch's DistributedSampler does), so ranks are disjoint and together cover the epoch. Training
keeps ``steps * batch_size`` positions per rank (drop_last: equal steps on every rank).
Each item is ``(epoch, global position, dataset index)``; the position, not the worker that
happens to process it, seeds the sample's random stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torchdata.nodes import BaseNode


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """int64[N]: the shuffled order of epoch ``epoch`` (the same on every rank)."""
    return np.random.default_rng([seed % 2**63, epoch, 0x5EED]).permutation(num_samples)


class ShardSampler(BaseNode[tuple[int, int, int]]):
    """Yields ``(epoch, position, index)`` for rank ``rank``'s ``per_rank`` samples of an epoch.

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
