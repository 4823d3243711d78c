"""The non-finite-loss policy: stop the run naming the step (``stop``), or drop the update (``skip``).

:class:`NonFiniteGuard` is the trainer's part. The default policy (``stop``) keeps an on-device
flag of the first step whose loss or gradient norm was NaN/Inf, read on logging steps and before
every checkpoint (no host sync per step), and raises :class:`NonFiniteLossError` naming that step. ``skip`` has to decide before each update, so
:class:`NonFiniteSkipper` costs one host sync (and, in a process group, one all-reduce of a flag)
per optimiser step -- the same price as AMP's GradScaler. It is an optimiser step pre-hook: when
any gradient is non-finite it sets every gradient to None, so SGD leaves the weights AND the
momentum buffers untouched (an exact skip), and counts the step; more than ``max_skipped``
skipped steps stop the run with :class:`TooManyNonFiniteSteps`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.hooks import RemovableHandle

from ssd_train.resilience.config import NonFiniteConfig


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the message names the step (exit code 3)."""


class TooManyNonFiniteSteps(RuntimeError):
    """More optimiser steps had non-finite gradients than ``max_skipped`` allows."""


class NonFiniteSkipper:
    """Installs the skip hook on ``optimizer``; ``skipped`` counts the dropped updates."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: NonFiniteConfig) -> None:
        self.cfg = cfg
        self.skipped = 0
        self.handle: RemovableHandle | None = optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in params]
        norms = torch.stack([n.float() for n in torch._foreach_norm(grads)])
        flag = torch.isfinite(norms).all().to(torch.int32).reshape(1)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)  # FSDP2 shards differ per rank
        if int(flag.item()) == 1:  # the one host sync of this policy
            return
        for p in params:
            p.grad = None
        self.skipped += 1
        if self.skipped > self.cfg.max_skipped:
            raise TooManyNonFiniteSteps(
                f"{self.skipped} optimiser steps had NaN/Inf gradients (resilience.nonfinite.max_skipped"
                f" = {self.cfg.max_skipped}); stopping. Lower the LR or enable optim.grad_clip_norm."
            )

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class NonFiniteGuard:
    """The trainer's non-finite policy: records the first bad step on the device, checks it on
    logging steps and before checkpoints; with ``skip``, drops bad updates instead.

    Args:
        optimizer: the training optimiser (the ``skip`` policy hooks its step).
        cfg: the ``resilience.nonfinite`` settings.
        device: where the step's tensors live.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, cfg: NonFiniteConfig, device: torch.device
    ) -> None:
        self.skipper = NonFiniteSkipper(optimizer, cfg) if cfg.policy == "skip" else None
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def record(self, finite: torch.Tensor, step: int) -> None:
        """Remember ``step`` if ``finite`` (0-d bool device tensor) is False (no host sync)."""
        bad = ~finite & (self._first_bad < 0)
        self._first_bad = torch.where(bad, step, self._first_bad)

    def check(self, epoch: int, last_checkpoint: object) -> None:
        """Raise :class:`NonFiniteLossError` naming the first bad step (a host sync).

        Under the ``skip`` policy bad updates were dropped instead, so this never raises.
        """
        if self.skipper is not None:
            return
        bad = int(self._first_bad.item())
        if bad >= 0:
            raise NonFiniteLossError(
                f"non-finite loss at step {bad} (epoch {epoch + 1}); last checkpoint:"
                f" {last_checkpoint or 'none'}. Lower the LR, enable optim.grad_clip_norm, check"
                " the data, or resume from that checkpoint."
            )

    def close(self) -> None:
        if self.skipper is not None:
            self.skipper.close()
