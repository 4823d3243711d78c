"""Learning-rate schedule of the MLPerf SSD v0.7 runs (spec section 5.1).

* base LR: NVIDIA's rule, ``2.5e-3 * max(1, round(lr_per_32 / 2.5e-3 * global_batch / 32))`` (MLPerf
  only allows integer multiples of 2.5e-3);
* warm-up: the reference formula ``lr(it) = base - (W - it) * base / (W * 2**warmup_factor)`` for
  ``it < W`` (linear from exactly 0 at iteration 0 when ``warmup_factor`` is 0);
* decay: x ``decay_factor`` at the start of each listed 0-based epoch.

The schedule is a pure function of the optimiser step, so the only state a checkpoint needs is the
step itself; :meth:`LRSchedule.state_dict` stores the parameters to detect a changed schedule.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

LR_QUANTUM = 2.5e-3
"""MLPerf v0.7 SSD: the base learning rate must be an integer multiple of this."""


def base_learning_rate(lr_per_32: float, global_batch: int) -> float:
    """NVIDIA v0.7's base LR: ``lr_per_32`` scaled linearly to ``global_batch``, rounded to a multiple of 2.5e-3.

    >>> round(base_learning_rate(3.2e-3, 912), 6)  # DGX A100: 8 x 114
    0.09
    """
    if global_batch < 1:
        raise ValueError(f"global batch must be >= 1, got {global_batch}")
    multiplier = max(1, round(lr_per_32 / LR_QUANTUM * global_batch / 32))
    return LR_QUANTUM * multiplier


@dataclass(frozen=True)
class LRSchedule:
    """Warm-up then step decay, indexed by the 0-based optimiser step (iteration).

    Attributes:
        base_lr: LR after warm-up and before the first decay.
        steps_per_epoch: optimiser steps per epoch (decay boundaries are epochs).
        warmup_iterations: W; 0 disables warm-up.
        warmup_factor: the reference's ``warmup_factor`` (0 = linear from 0).
        decay_epochs: 0-based epochs at whose start the LR is multiplied by ``decay_factor``.
        decay_factor: multiplier per boundary passed.
    """

    base_lr: float
    steps_per_epoch: int
    warmup_iterations: int = 0
    warmup_factor: float = 0.0
    decay_epochs: Sequence[int] = field(default_factory=tuple)
    decay_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        object.__setattr__(self, "decay_epochs", tuple(sorted(self.decay_epochs)))

    def __call__(self, iteration: int) -> float:
        """The learning rate used by optimiser step ``iteration`` (0-based)."""
        epoch = iteration // self.steps_per_epoch
        decays = bisect.bisect_right(self.decay_epochs, epoch)
        lr = self.base_lr * self.decay_factor**decays
        w = self.warmup_iterations
        if iteration < w:
            lr = lr - (w - iteration) * lr / (w * 2**self.warmup_factor)
        return lr

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set every parameter group's LR for step ``iteration``; returns it (no host sync)."""
        lr = self(iteration)
        for group in optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, object]:
        """The schedule's parameters (the position is the trainer's step)."""
        state = asdict(self)
        state["decay_epochs"] = list(self.decay_epochs)
        return state
