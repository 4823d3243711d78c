"""TEST-ONLY fault injection (settings ``resilience.faults.*``), used by tests/train to prove recovery.

Faults fire inside a training step, from a forward pre-hook / forward hook on the model (training
mode only, so evaluation is untouched), at the step whose 0-based index (optimiser steps done
before it) equals the setting:

- ``nan_loss_at_step``: the model's outputs become NaN, hence the loss (every rank);
- ``exit_at_step``: rank ``fault_rank`` calls ``os._exit(13)`` (a crashed worker);
- ``sleep_at_step``: rank ``fault_rank`` sleeps ``sleep_s`` seconds (a stuck worker).

With ``once`` (default) the exit and sleep faults write ``<run dir>/fault-<kind>-rank<k>.fired``
before firing and never fire again in that run folder, so a restarted group runs through.
Never set these in real runs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ssd_train.resilience.config import FaultInjectionConfig

EXIT_CODE = 13


class FaultInjector:
    """Installs the configured faults on a model; ``step_fn()`` returns optimiser steps done."""

    def __init__(
        self, cfg: FaultInjectionConfig, run_dir: Path, rank: int, step_fn: Callable[[], int]
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.step_fn = step_fn
        self.handles: list[RemovableHandle] = []

    @property
    def active(self) -> bool:
        c = self.cfg
        return (
            c.nan_loss_at_step is not None
            or c.exit_at_step is not None
            or c.sleep_at_step is not None
        )

    def install(self, model: nn.Module) -> FaultInjector:
        if self.active:
            self.handles.append(model.register_forward_pre_hook(self._pre_forward))
            self.handles.append(model.register_forward_hook(self._post_forward))
        return self

    def _fire_once(self, kind: str) -> bool:
        marker = self.run_dir / f"fault-{kind}-rank{self.rank}.fired"
        if self.cfg.once and marker.exists():
            return False
        marker.write_text(f"{kind} fault fired at step {self.step_fn()}\n")
        return True

    def _pre_forward(self, module: nn.Module, args: Any) -> None:
        if not module.training or self.rank != self.cfg.fault_rank:
            return
        step = self.step_fn()
        if step == self.cfg.sleep_at_step and self._fire_once("sleep"):
            print(
                f"[fault injection] rank {self.rank} sleeps {self.cfg.sleep_s} s in step {step}",
                file=sys.stderr,
            )
            time.sleep(self.cfg.sleep_s)
        if step == self.cfg.exit_at_step and self._fire_once("exit"):
            print(
                f"[fault injection] rank {self.rank} exits in step {step}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(EXIT_CODE)

    def _post_forward(self, module: nn.Module, args: Any, output: Any) -> Any:
        if not module.training or self.step_fn() != self.cfg.nan_loss_at_step:
            return None
        nan = float("nan")
        if isinstance(output, tuple):
            return tuple(o * nan if isinstance(o, torch.Tensor) else o for o in output)
        return output * nan

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
