"""Stop requests (preemption): SIGTERM / SIGUSR1 in a worker, or the file ``<run dir>/STOP``.

Protocol (interfaces.md, "Preemption and restarts"): a request reaching any worker makes every
rank finish its current step; on the next check step (every ``check_every_steps`` steps, one
all-reduce of a flag: no host sync on other steps) all ranks agree to stop, write a checkpoint
together, rank 0 writes the ``requeue`` marker (:meth:`StopRequest.acknowledge`) and every worker
returns exit code 0. A second signal exits at once: after the first one the handler restores the
default action, so the next SIGTERM/SIGUSR1 kills the process immediately (non-zero status,
even while it is blocked inside a collective).

Launchers: ``torchrun`` turns its own SIGTERM into SIGTERM for its workers and SIGKILLs them 30 s
later (its grace period), so a stop must finish in that time; it does not forward SIGUSR1 (and
SIGUSR1 kills torchrun itself), so Slurm's ``run.sub`` either sends USR1 to the worker processes
or touches the stop file (preferred: it reaches every node through the shared file system).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from ssd_train.resilience.config import PreemptionConfig

log = logging.getLogger(__name__)

REQUEUE_MARKER = "requeue"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def requeue_marker(run_dir: Path) -> Path:
    return Path(run_dir) / REQUEUE_MARKER


class StopRequest:
    """A stop request that every rank agrees on collectively (see the module docstring).

    Args:
        run_dir: the run folder (holds the stop file and the requeue marker).
        cfg: check interval, stop-file name, whether to install signal handlers.
        device: where the agreement flag lives (the device of the process group's backend:
            ``cuda`` for NCCL, ``cpu`` for gloo).
        group: process group of the agreement (default group).
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: PreemptionConfig | None = None,
        *,
        device: torch.device | str = "cpu",
        group: dist.ProcessGroup | None = None,
    ) -> None:
        self.cfg = cfg or PreemptionConfig()
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.group = group
        self.rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.local_reason: str | None = None  # what this process saw (signal or programmatic)
        self.reason: str | None = None  # set on every rank once the ranks agreed to stop
        self._previous: dict[int, Any] = {}

    @property
    def stop_file(self) -> Path:
        return self.run_dir / self.cfg.stop_file

    # -- signals ------------------------------------------------------------------------------
    def install(self) -> StopRequest:
        """Install SIGTERM/SIGUSR1 handlers (main thread only; a no-op when disabled). Returns self."""
        if not self.cfg.handle_signals or self._previous:
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        # the next stop signal takes the default action: the process dies at once
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self.local_reason is None:
            self.local_reason = name
        print(
            f"rank {self.rank}: {name} received; finishing the step, then checkpointing and exiting"
            f" (ranks agree every {self.cfg.check_every_steps} steps). Send it again to exit at once.",
            file=sys.stderr,
            flush=True,
        )

    def request(self, reason: str) -> None:
        """Ask for a stop from code (as if a signal had arrived on this rank)."""
        if self.local_reason is None:
            self.local_reason = reason

    # -- agreement ----------------------------------------------------------------------------
    def should_stop(self, step: int) -> bool:
        """Collective on check steps (``step % check_every_steps == 0``): True on every rank once
        any rank saw a signal or the stop file. Every rank must call it after every step."""
        if self.reason is not None:
            return True
        if step % self.cfg.check_every_steps != 0:
            return False
        return self.check_now()

    def check_now(self) -> bool:
        """The agreement itself (one all-reduce and one host sync); collective."""
        local = self.local_reason
        if local is None and self.stop_file.exists():
            local = f"stop file {self.stop_file}"
        flag = torch.tensor([0 if local is None else 1], dtype=torch.int32, device=self.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(self.group) > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if int(flag.item()) == 0:
            return False
        self.reason = local or "stop requested on another rank"
        log.warning("rank %d: stopping (%s)", self.rank, self.reason)
        return True

    def acknowledge(self, step: int, checkpoint: Path | None) -> None:
        """After the stop checkpoint is complete: rank 0 consumes the stop file and writes the
        ``requeue`` marker (JSON: step, checkpoint, reason, time) for the launcher."""
        if self.rank != 0:
            return
        self.stop_file.unlink(missing_ok=True)
        payload = {
            "step": step,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "reason": self.reason or self.local_reason,
            "time": time.time(),
        }
        marker = requeue_marker(self.run_dir)
        tmp = marker.with_name(f".{marker.name}.tmp")
        tmp.write_text(json.dumps(payload) + "\n")
        os.replace(tmp, marker)

    def clear_stale_marker(self) -> None:
        """Rank 0, at start-up: remove a ``requeue`` marker left by the previous segment."""
        if self.rank == 0:
            requeue_marker(self.run_dir).unlink(missing_ok=True)

    def close(self) -> None:
        """Restore the previous signal handlers (if they are still ours or the default)."""
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):  # not the main thread
                signal.signal(sig, previous)
        self._previous = {}
