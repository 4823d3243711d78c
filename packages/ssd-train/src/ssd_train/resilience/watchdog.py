"""Hang diagnosis: the stuck-step watchdog.

:class:`StepWatchdog` runs a daemon thread on every rank. The trainer wraps each optimiser step
in ``with watchdog.step(n):``; when the step in progress has run longer than
``max(floor_s, factor x median of the recent step times)``, the thread writes which rank is stuck,
at which step, for how long, and the Python stack of every thread of the process (where it is
stuck) to stderr and to ``<run dir>/watchdog-rank<k>.txt`` -- once per stuck step -- instead of
the job waiting silently until the collective timeout. A rank that sleeps or spins shows its own
frame; the ranks waiting for it show the collective they wait in. Use ``with watchdog.paused():``
around work that is legitimately long (evaluation, checkpoint writes).

The process-group timeout switch (long while compiling, short afterwards) is
:func:`ssd_train.distributed.set_collective_timeout`.
"""

from __future__ import annotations

import contextlib
import datetime
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ssd_train.resilience.config import WatchdogConfig


def format_all_stacks() -> str:
    """The current Python stack of every thread of this process, innermost call last."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f'Thread "{names.get(ident, "?")}" ({ident}):\n')
        parts.extend(traceback.format_stack(frame))
    return "".join(parts)


class StepWatchdog:
    """Reports a step that takes far longer than usual (see the module docstring).

    Args:
        run_dir: where ``watchdog-rank<k>.txt`` goes.
        rank: this process's global rank.
        cfg: factor, floor, warm-up steps, median window, poll interval.
    """

    def __init__(self, run_dir: Path, rank: int, cfg: WatchdogConfig | None = None) -> None:
        self.cfg = cfg or WatchdogConfig()
        self.report_path = Path(run_dir) / f"watchdog-rank{rank}.txt"
        self.rank = rank
        self.durations: deque[float] = deque(maxlen=self.cfg.window)
        self.reports = 0
        self._lock = threading.Lock()
        self._current: tuple[int, float] | None = None  # (step, start time) of the step in progress
        self._reported_step: int | None = None
        self._paused = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StepWatchdog:
        if self.cfg.enabled and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"step-watchdog-rank{self.rank}", daemon=True
            )
            self._thread.start()
        return self

    @contextlib.contextmanager
    def step(self, step: int) -> Iterator[None]:
        """Time one step (cheap: two clock reads; no device sync)."""
        start = time.monotonic()
        with self._lock:
            self._current = (step, start)
        try:
            yield
        finally:
            with self._lock:
                self._current = None
                if not self._paused:
                    self.durations.append(time.monotonic() - start)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No reports (and no timing) while legitimately long work runs."""
        with self._lock:
            self._paused += 1
            self._current = None
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1

    def threshold(self) -> float | None:
        """Seconds after which the step in progress is reported (None while warming up)."""
        with self._lock:
            if len(self.durations) < self.cfg.warmup_steps:
                return None
            median = statistics.median(self.durations)
        return max(self.cfg.floor_s, self.cfg.factor * median)

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.poll_s):
            self.poll()

    def poll(self) -> bool:
        """Check once (the thread calls this every ``poll_s``); True when it reported."""
        limit = self.threshold()
        with self._lock:
            current, paused = self._current, self._paused
        if limit is None or current is None or paused:
            return False
        step, start = current
        elapsed = time.monotonic() - start
        if elapsed <= limit or step == self._reported_step:
            return False
        self._reported_step = step
        self._report(step, elapsed, limit)
        return True

    def _report(self, step: int, elapsed: float, limit: float) -> None:
        median = statistics.median(self.durations)
        when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        text = (
            f"[watchdog {when}] rank {self.rank} is stuck: step {step} has run {elapsed:.1f} s "
            f"(usual {median:.3f} s, threshold {limit:.1f} s = max(floor {self.cfg.floor_s} s, "
            f"{self.cfg.factor} x median)). Stacks of all threads of this process:\n"
            f"{format_all_stacks()}\n"
        )
        self.reports += 1
        print(text, file=sys.stderr, flush=True)
        with open(self.report_path, "a", encoding="utf-8") as f:
            f.write(text)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
