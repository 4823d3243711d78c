"""Learning-rate schedule of the MLPerf SSD v0.7 runs, as NVIDIA's v0.7 loop computes it (spec 5.1).

* base LR: NVIDIA's rule, ``2.5e-3 * max(1, round(lr_per_32 / 2.5e-3 * global_batch / 32))`` (MLPerf
  only allows integer multiples of 2.5e-3);
* warm-up: the reference formula ``lr(it) = base - (W - it) * base / (W * 2**warmup_factor)`` for
  ``it < W`` (linear from exactly 0 at iteration 0 when ``warmup_factor`` is 0);
* no reset after warm-up: NVIDIA only writes the LR during warm-up and at a decay, so from
  iteration W until the first decay the LR stays at the warm-up value of iteration W - 1,
  ``base - base / (W * 2**warmup_factor)`` (``base * (W-1)/W`` for factor 0: 0.0898615 for
  base 0.09, W = 650);
* decay: ``base * decay_factor**k`` exactly from the k-th decay step on. Decays start at given
  optimiser steps: the first step of each decay epoch, see :func:`decay_steps_from_epochs`
  (NVIDIA DGX A100, 8 x 114: epochs 44 and 55 start at iterations 5658 and 7072).

The schedule is a pure function of the optimiser step, so the only state a checkpoint needs is the
step itself; :meth:`LRSchedule.state_dict` stores the parameters to detect a changed schedule.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
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


def decay_steps_from_epochs(
    epoch_start_batch: Callable[[int], int],
    decay_epochs: Sequence[int],
    grad_accumulation_steps: int = 1,
) -> tuple[int, ...]:
    """Optimiser steps at which the LR decays: the first step of each 0-based decay epoch.

    ``epoch_start_batch(e)`` is the batch (micro-batch with gradient accumulation) at which
    epoch ``e`` starts (``TrainLoader.epoch_start_batch``); a step consumes
    ``grad_accumulation_steps`` batches, so epoch ``e`` starts at step
    ``ceil(epoch_start_batch(e) / grad_accumulation_steps)``.
    """
    if grad_accumulation_steps < 1:
        raise ValueError(f"grad_accumulation_steps must be >= 1, got {grad_accumulation_steps}")
    k = grad_accumulation_steps
    return tuple(-(-epoch_start_batch(int(e)) // k) for e in decay_epochs)


@dataclass(frozen=True)
class LRSchedule:
    """Warm-up, hold, step decay; indexed by the 0-based optimiser step (iteration).

    Attributes:
        base_lr: the base LR (before decays).
        warmup_iterations: W; 0 disables warm-up (then the LR is ``base_lr`` until a decay).
        warmup_factor: the reference's ``warmup_factor`` (0 = linear from 0).
        decay_steps: optimiser steps at which decay k = 1, 2, ... starts (sorted on creation).
        decay_factor: the LR from decay step k on is ``base_lr * decay_factor**k``.
    """

    base_lr: float
    warmup_iterations: int = 0
    warmup_factor: float = 0.0
    decay_steps: Sequence[int] = field(default_factory=tuple)
    decay_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be >= 0, got {self.warmup_iterations}")
        steps = tuple(sorted(int(s) for s in self.decay_steps))
        if any(s < 0 for s in steps):
            raise ValueError(f"decay_steps must be >= 0, got {list(self.decay_steps)}")
        object.__setattr__(self, "decay_steps", steps)

    def _warmup(self, iteration: int) -> float:
        w = self.warmup_iterations
        return self.base_lr - (w - iteration) * self.base_lr / (w * 2**self.warmup_factor)

    def __call__(self, iteration: int) -> float:
        """The learning rate used by optimiser step ``iteration`` (0-based), a host float."""
        decays = bisect.bisect_right(self.decay_steps, iteration)
        w = self.warmup_iterations
        if decays and iteration >= w:
            return self.base_lr * self.decay_factor**decays
        if iteration < w:  # a decay inside the warm-up scales the warm-up (as before)
            return self._warmup(iteration) * self.decay_factor**decays
        return self._warmup(w - 1) if w else self.base_lr  # held until the first decay

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
        state["decay_steps"] = list(self.decay_steps)
        return state
