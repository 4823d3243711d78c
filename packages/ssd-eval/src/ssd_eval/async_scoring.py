"""Asynchronous scoring: rank 0 scores gathered detections in a separate process.

One worker process (ProcessPoolExecutor, spawn or forkserver, never fork) loads and indexes the
ground truth once in its initializer; each `submit(epoch, rows)` queues a scoring job, `poll()`
returns the finished results without blocking (each carrying its epoch), `wait()` blocks for all.
This module and the worker import no torch.
"""

from __future__ import annotations

import multiprocessing
import signal
import weakref
from collections import deque
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from pathlib import Path
from typing import Any

import numpy as np

from ssd_eval.groundtruth import GroundTruth, load_ground_truth
from ssd_eval.result import EvalResult
from ssd_eval.scoring import Backend, CocoScorer

_WORKER_SCORER: CocoScorer | None = None


class AsyncScoringError(RuntimeError):
    """The scoring process failed (the message names the epoch and the cause)."""


def _init_worker(
    gt: str | Mapping[str, Any], backend: Backend, per_class: bool, confusion_score: float
) -> None:
    """Worker initializer: load and index the ground truth once. Ctrl-C in a terminal reaches
    the whole foreground process group: the worker ignores it and the training process, which
    owns the stop, shuts it down."""
    global _WORKER_SCORER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_SCORER = CocoScorer(
        load_ground_truth(gt),
        backend=backend,
        per_class=per_class,
        confusion_score=confusion_score,
    )


def _score_in_worker(epoch: int | None, rows: np.ndarray) -> EvalResult:
    assert _WORKER_SCORER is not None, "scoring worker was not initialised"
    return _WORKER_SCORER.score(rows, epoch=epoch)


def _shutdown(executor: ProcessPoolExecutor) -> None:
    executor.shutdown(wait=True, cancel_futures=True)


class AsyncScorer:
    """Scores detection rows in one background process.

    Args:
        gt: ground-truth json path (preferred: the worker reads it itself), dict or GroundTruth.
        backend: "faster" or "pycocotools".
        start_method: "spawn" or "forkserver".
        max_pending: jobs in flight before `submit` waits for the oldest.
        per_class, confusion_score: as CocoScorer's (per-category results, computed here too).
    """

    def __init__(
        self,
        gt: str | Path | Mapping[str, Any] | GroundTruth,
        *,
        backend: Backend = "faster",
        start_method: str = "spawn",
        max_pending: int = 2,
        per_class: bool = True,
        confusion_score: float = 0.25,
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        if isinstance(gt, GroundTruth):
            source: str | Mapping[str, Any] = gt.dataset
        elif isinstance(gt, Mapping):
            source = dict(gt)
        else:
            source = str(gt)
        self.max_pending = max_pending
        self._executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context(start_method),
            initializer=_init_worker,
            initargs=(source, backend, per_class, confusion_score),
        )
        self._pending: deque[tuple[int | None, Future[EvalResult]]] = deque()
        self._finalizer = weakref.finalize(self, _shutdown, self._executor)

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet returned by poll()/wait()."""
        return len(self._pending)

    def submit(self, epoch: int | None, rows: np.ndarray) -> None:
        """Queue rows float64 [R, 7] (see ssd_eval.detections) for scoring; returns at once
        unless `max_pending` jobs are still running or queued (then waits for one to finish)."""
        if not self._finalizer.alive:
            raise RuntimeError("AsyncScorer is closed")
        while True:  # finished-but-unpolled jobs do not count: poll() returns them later
            in_flight = [future for _, future in self._pending if not future.done()]
            if len(in_flight) < self.max_pending:
                break
            wait_for(in_flight, return_when=FIRST_COMPLETED)
        self._pending.append((epoch, self._executor.submit(_score_in_worker, epoch, rows)))

    def _take(self, blocking: bool) -> list[EvalResult]:
        """Pop finished jobs in order. A failed job raises AsyncScoringError, but only once the
        results finished before it have been returned (the next call raises)."""
        results: list[EvalResult] = []
        while self._pending and (blocking or self._pending[0][1].done()):
            epoch, future = self._pending[0]
            error = future.exception()
            if error is not None and results:
                break
            self._pending.popleft()
            if error is not None:
                raise AsyncScoringError(
                    f"scoring the detections of epoch {epoch} failed: {type(error).__name__}: {error}"
                ) from error
            results.append(future.result())
        return results

    def poll(self) -> list[EvalResult]:
        """Finished results in submission order (never blocks)."""
        return self._take(blocking=False)

    def wait(self) -> list[EvalResult]:
        """Block until every submitted job is done; return their results in submission order."""
        return self._take(blocking=True)

    def worker_pid(self) -> int:
        """Process id of the scoring worker (starts it if needed); for diagnostics and tests."""
        import os

        return self._executor.submit(os.getpid).result()

    def close(self) -> None:
        """Cancel jobs not yet started, wait for the running one, and stop the worker process."""
        self._pending.clear()
        self._finalizer()

    def __enter__(self) -> AsyncScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
