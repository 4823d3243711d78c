"""``resilience.nonfinite.policy = "skip"``: drop an optimiser update whose gradients are NaN/Inf.

The default policy (``stop``) is the trainer's on-device flag, read on logging steps and before
every checkpoint (no host sync per step). ``skip`` has to decide before each update, so
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
