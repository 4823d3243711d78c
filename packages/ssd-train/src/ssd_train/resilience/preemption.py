"""Stop requests: SIGTERM / SIGUSR1 (preemption), SIGINT (Ctrl-C), or the file ``<run dir>/STOP``.

Protocol (interfaces.md, "Preemption and restarts"): a request reaching any worker makes every
rank finish its current step; on the next check step (every ``check_every_steps`` steps, one
all-reduce of a flag: no host sync on other steps) all ranks agree to stop, write a checkpoint
together, rank 0 writes the ``requeue`` marker (:meth:`StopRequest.acknowledge`) and every worker
returns exit code 0. A second signal exits at once: after the first one the handler restores the
default action, so the next SIGTERM/SIGUSR1 kills the process immediately (non-zero status,
even while it is blocked inside a collective).

Ctrl-C (SIGINT; ``torchrun`` forwards it to its workers) takes the same path, except that no
``requeue`` marker is written (the user stopped the run; a launcher must not requeue it) and
the run exits 130 (:attr:`StopRequest.interrupted` on every rank). A second Ctrl-C exits at once
with one line and status 130: a watcher thread reads the signal from Python's wakeup fd, so this
works even while the main thread is blocked inside a collective or a long kernel; the newest
complete checkpoint stays as it was (a save in flight is left torn, without its ``COMPLETE``
marker, and is skipped on resume).

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
import threading
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
INTERRUPT_EXIT_CODE = 130
"""Exit status of a run stopped by Ctrl-C (after its checkpoint, or at once on a second one)."""
_STOP, _INTERRUPT = 1, 2  # agreement flag values (MAX over ranks: Ctrl-C anywhere wins)


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
        self.interrupted = False  # the agreed stop comes from Ctrl-C on some rank (exit 130)
        self._interrupts = 0  # SIGINTs seen by this process
        self._previous: dict[int, Any] = {}
        self._watcher: _SecondInterrupt | None = None

    @property
    def stop_file(self) -> Path:
        return self.run_dir / self.cfg.stop_file

    # -- signals ------------------------------------------------------------------------------
    def install(self) -> StopRequest:
        """Install SIGTERM/SIGUSR1/SIGINT handlers (main thread only; a no-op when disabled).
        SIGINT is left alone when the process was started with it ignored (``nohup``, a
        background job of a non-interactive shell). Returns self."""
        if not self.cfg.handle_signals or self._previous:
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_interrupt)
            self._watcher = _SecondInterrupt.start(self._second_interrupt_line())
        return self

    def _second_interrupt_line(self) -> str:
        if self.rank != 0:
            return ""
        return (
            f"ssd-train: second Ctrl-C: exiting now without a checkpoint; the newest complete"
            f" checkpoint in {self.run_dir / 'checkpoints'} is unchanged (rerun the same command"
            " to continue from it)\n"
        )

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C: the first one is a stop request; the second exits at once (see the watcher)."""
        self._interrupts += 1
        if self._interrupts > 1:
            _exit_now(self._second_interrupt_line())
        if self.local_reason is None:
            self.local_reason = "SIGINT"
        if self.rank == 0:
            print(
                f"\nCtrl-C: finishing the step, then writing a checkpoint and exiting (ranks agree"
                f" every {self.cfg.check_every_steps} steps). Press Ctrl-C again to exit at once"
                " without a checkpoint.",
                file=sys.stderr,
                flush=True,
            )

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
        value = 0 if local is None else _INTERRUPT if local == "SIGINT" else _STOP
        flag = torch.tensor([value], dtype=torch.int32, device=self.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(self.group) > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        agreed = int(flag.item())
        if agreed == 0:
            return False
        self.interrupted = agreed == _INTERRUPT
        self.reason = local or (
            "Ctrl-C on another rank" if self.interrupted else "stop requested on another rank"
        )
        log.warning("rank %d: stopping (%s)", self.rank, self.reason)
        return True

    def acknowledge(self, step: int, checkpoint: Path | None) -> None:
        """After the stop checkpoint is complete: rank 0 consumes the stop file and writes the
        ``requeue`` marker (JSON: step, checkpoint, reason, time) for the launcher; not after
        Ctrl-C (the user stopped the run: nothing to requeue)."""
        if self.rank != 0:
            return
        self.stop_file.unlink(missing_ok=True)
        if self.interrupted:
            return
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
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None


def _exit_now(line: str) -> None:
    """Write ``line`` to stderr unbuffered and end the process with status 130 (no cleanup: a
    second Ctrl-C must not wait for a collective, a save or a loader)."""
    if line:
        with contextlib.suppress(OSError):
            os.write(2, line.encode())
    os._exit(INTERRUPT_EXIT_CODE)


class _SecondInterrupt:
    """A daemon thread that exits the process on the second SIGINT, even while the main thread is
    blocked in C++ (where Python signal handlers cannot run). Python's C-level handler writes
    each caught signal's number to the wakeup fd (:func:`signal.set_wakeup_fd`) at once; the
    thread counts the SIGINT bytes."""

    def __init__(self, line: str, read_fd: int, write_fd: int) -> None:
        self.line, self.read_fd, self.write_fd = line, read_fd, write_fd
        self.thread = threading.Thread(target=self._watch, name="second-ctrl-c", daemon=True)

    @classmethod
    def start(cls, line: str) -> _SecondInterrupt | None:
        """Install the wakeup fd and start the thread; None when a wakeup fd is already in use
        (e.g. an asyncio loop) or this is not the main thread (the handler alone then exits on
        the second Ctrl-C, as soon as the main thread runs Python code)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except ValueError:
            previous = -2
        if previous != -1:
            if previous >= 0:
                signal.set_wakeup_fd(previous)
            os.close(read_fd)
            os.close(write_fd)
            return None
        watcher = cls(line, read_fd, write_fd)
        watcher.thread.start()
        return watcher

    def _watch(self) -> None:
        seen = 0
        while True:
            try:
                data = os.read(self.read_fd, 64)
            except OSError:
                return
            if not data:  # stop() closed the pipe
                return
            seen += data.count(signal.SIGINT)
            if seen >= 2:
                _exit_now(self.line)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):  # not the main thread
            signal.set_wakeup_fd(-1)
        os.close(self.write_fd)  # the thread's read returns b"" and it ends
        self.thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self.read_fd)
