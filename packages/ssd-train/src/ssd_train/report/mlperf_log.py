"""MLPerf Training log (`:::MLLOG` lines) for the SSD benchmark, written with `mlperf_logging.mllog`.

Rank 0 writes `<run dir>/mlperf.log` (a later segment of the same run folder, e.g. after a
requeue, writes `mlperf.resume-<k>.log`, k = 1, 2, ...) and echoes every line to stdout. Every
key that the `closed_ssd` rules of rulesets 0.7.0 and 1.0.0 require is logged by an explicit
method of `MLPerfLogger`; `ssd_train.report.compliance.check_log` runs the official checker on the file.

Epoch numbers follow NVIDIA's v0.7 submission (spec section 6.1): the trainer counts epochs from
0, the log counts them from 1. Training the 0-based epoch `e` logs `epoch_num = e + 1`; an
evaluation after `n` finished epochs logs `epoch_num = n`; so the evaluation that follows the
40th epoch (0-based 39) logs 40 for both its epoch_stop and its eval_accuracy. epoch_start and
epoch_stop also carry `current_iter_num`, the 0-based iteration at which the epoch starts or
stops, as NVIDIA's log does (e.g. 129 for the start of its second epoch at 8 x 114).

The hyperparameter record and the closed-division rules live in
:mod:`ssd_train.report.mlperf_hparams` (re-exported here).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from mlperf_logging.mllog import constants as mlc
from mlperf_logging.mllog.mllog import MLLogger

from ssd_train.report.config import Division, MLPerfConfig
from ssd_train.report.mlperf_hparams import (
    CLOSED_TARGET_MAP,
    MLPerfHyperparameters,
    closed_rule_violations,
    resolve_division,
)

__all__ = [
    "BENCHMARK",
    "CLOSED_TARGET_MAP",
    "MLPerfHyperparameters",
    "MLPerfLogger",
    "RunStatus",
    "closed_rule_violations",
    "describe_platform",
    "evaluation_blocks",
    "resolve_division",
    "segment_log_path",
]

# "ssd": in rulesets 0.7.0 and 1.0.0 this is SSD300-ResNet34 (RetinaNet from 2.0.0)
BENCHMARK = mlc.SSD
RunStatus = Literal["success", "aborted"]


def describe_platform(world_size: int, device_name: str) -> str:
    """submission_platform text, e.g. '8xNVIDIA H100 80GB HBM3' or '1xCPU'."""
    return f"{world_size}x{device_name}"


def segment_log_path(run_dir: Path) -> Path:
    """`mlperf.log` for the first segment of a run folder, `mlperf.resume-<k>.log` afterwards."""
    first = run_dir / "mlperf.log"
    if not first.exists():
        return first
    suffixes = [p.stem.removeprefix("mlperf.resume-") for p in run_dir.glob("mlperf.resume-*.log")]
    k = max((int(x) for x in suffixes if x.isdigit()), default=0) + 1
    return run_dir / f"mlperf.resume-{k}.log"


def evaluation_blocks(
    eval_after_epochs: Sequence[int], max_epochs: int, start_epoch: int = 0
) -> list[tuple[int, int]]:
    """Training blocks between evaluations as (first 0-based epoch, epoch count) pairs.

    `eval_after_epochs` holds the numbers of finished epochs after which the model is evaluated
    (e.g. 40, 50, 55, ...); the last block ends at `max_epochs`. Example: ([40, 50], 60) ->
    [(0, 40), (40, 10), (50, 10)].
    """
    ends = sorted({e for e in eval_after_epochs if start_epoch < e <= max_epochs} | {max_epochs})
    blocks, first = [], start_epoch
    for end in ends:
        if end > first:
            blocks.append((first, end - first))
            first = end
    return blocks


class _CurrentStdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at emit time, so a rich live display can redirect it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stdout)
        super().emit(record)


class _RaisingFileHandler(logging.FileHandler):
    """A FileHandler that keeps its first write error of the environment (disk full, permission)
    as an :class:`~ssd_train.resilience.environment.EnvironmentFailure` naming the log, instead of
    logging's "--- Logging error ---" traceback on stderr (mllog swallows exceptions raised while
    logging, so :meth:`MLPerfLogger._log` raises it); later records are dropped."""

    failure: Exception | None = None
    reported = False

    def handleError(self, record: logging.LogRecord) -> None:
        from ssd_train.resilience.environment import write_failure

        error = sys.exc_info()[1]
        failure = (
            write_failure(Path(self.baseFilename), error, what="MLPerf log") if error else None
        )
        if failure is None:
            super().handleError(record)
        elif self.failure is None:
            self.failure = failure


class MLPerfLogger:
    """The MLPerf log of one run segment (rank 0 writes; other ranks' calls do nothing).

    Call order for the trainer (the checker rejects other orders; this class raises
    `RuntimeError` on most mistakes):

    1. `MLPerfLogger(run_dir, cfg, rank=rank)`; `submission_info(division, platform)`;
       `cache_clear()` (after the page cache was dropped, or just to state it, as NVIDIA did);
    2. `init_start()`; `hyperparameters(MLPerfHyperparameters(...))` (seed, global_batch_size,
       model_bn_span, opt_*, max_samples, gradient_accumulation_steps);
    3. build the model, optimiser, `torch.compile`, warm-up steps on synthetic tensors, restore a
       checkpoint. NOTHING may read the dataset (images or annotations) before `run_start`, and
       `init_stop` must follow the first `init_start` within 20 minutes (0.7.0; 30 in 1.0.0);
    4. `init_stop()`; `run_start()`;
    5. build the data loaders; `dataset_sizes(train_samples=..., eval_samples=...)`;
    6. for each evaluation interval: `block_start(first_epoch, epoch_count)`; per epoch
       `epoch_start(epoch, iteration)` ... `epoch_stop(epoch, iteration)` (0-based `epoch`;
       `iteration` the 0-based iteration where the epoch starts / stops); `block_stop()`;
    7. per evaluation: `eval_start(epochs_done)`, `eval_accuracy(map, epochs_done)`,
       `eval_stop(epochs_done)` — or, for a result scored asynchronously,
       `eval_result(map, epochs_done)`, which logs all three at once as NVIDIA did;
    8. `run_stop("success")` once the target is reached, `run_stop("aborted")` when the run ends
       without reaching it (max epochs, non-finite loss, error, preemption); then `close()`.
       `close()` logs `run_stop("aborted")` itself if the run started and was not stopped.
    """

    def __init__(
        self,
        run_dir: Path | str,
        cfg: MLPerfConfig | None = None,
        *,
        rank: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg or MLPerfConfig()
        self.enabled = rank == 0 and self.cfg.enabled
        self._clock = clock
        self._seen: set[str] = set()
        self._open_block: int | None = None
        self.path: Path | None = None
        self._logger: logging.Logger | None = None
        self._mllog: MLLogger | None = None
        if not self.enabled:
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = segment_log_path(run_dir)
        # A private logging.Logger per log file: mllog's shared logger would keep adding file
        # handlers when several runs (tests, segments) live in one process.
        self._logger = logging.getLogger(f"ssd_train.mlperf.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        handlers: list[logging.Handler] = [_RaisingFileHandler(self.path, encoding="utf-8")]
        if self.cfg.echo_stdout:
            handlers.append(_CurrentStdoutHandler(sys.stdout))
        for handler in handlers:
            handler.setLevel(logging.INFO)
            self._logger.addHandler(handler)
        self._mllog = MLLogger(logger=self._logger, default_stack_offset=1)

    # -- plumbing --------------------------------------------------------------------------
    def _log(
        self,
        kind: str,
        key: str,
        value: Any = None,
        metadata: dict | None = None,
        at: float | None = None,
    ) -> None:
        if self._mllog is None:
            return
        if self._logger is None or not self._logger.handlers:
            raise RuntimeError(f"MLPerf log {self.path} is closed; cannot log {key!r}")
        log = {"start": self._mllog.start, "end": self._mllog.end, "event": self._mllog.event}[kind]
        time_ms = int((self._clock() if at is None else at) * 1e3)
        # stack_offset 3: the metadata names the caller of the public method (the trainer)
        log(key=key, value=value, metadata=metadata, time_ms=time_ms, stack_offset=3)
        for handler in self._logger.handlers:
            if (
                isinstance(handler, _RaisingFileHandler)
                and handler.failure
                and not handler.reported
            ):
                handler.reported = True
                raise handler.failure

    def _once(self, key: str) -> None:
        if key in self._seen:
            raise RuntimeError(f"MLPerf key {key!r} was already logged; the rules allow it once")
        self._seen.add(key)

    def _require(self, key: str, before: str) -> None:
        if self.enabled and key not in self._seen:
            raise RuntimeError(f"MLPerf {before!r} must come after {key!r} (see MLPerfLogger doc)")

    def _forbid(self, key: str, before: str) -> None:
        if self.enabled and key in self._seen:
            raise RuntimeError(f"MLPerf {before!r} must come before {key!r} (see MLPerfLogger doc)")

    # -- header ----------------------------------------------------------------------------
    def submission_info(self, division: Division, platform: str) -> None:
        """submission_benchmark 'ssd', org, division, status (from settings) and platform."""
        if division not in ("closed", "open"):
            raise ValueError(f"MLPerf division must be 'closed' or 'open', got {division!r}")
        if not platform:
            raise ValueError("MLPerf submission_platform must not be empty")
        self._once(mlc.SUBMISSION_BENCHMARK)
        self._log("event", mlc.SUBMISSION_BENCHMARK, BENCHMARK)
        self._log("event", mlc.SUBMISSION_ORG, self.cfg.org)
        self._log("event", mlc.SUBMISSION_DIVISION, division)
        self._log("event", mlc.SUBMISSION_STATUS, self.cfg.status)
        self._log("event", mlc.SUBMISSION_PLATFORM, platform)

    def cache_clear(self, cleared: bool = True) -> None:
        self._log("event", mlc.CACHE_CLEAR, bool(cleared))

    def init_start(self) -> None:
        self._forbid(mlc.INIT_STOP, mlc.INIT_START)
        self._seen.add(mlc.INIT_START)
        self._log("start", mlc.INIT_START)

    def hyperparameters(self, hp: MLPerfHyperparameters) -> None:
        """seed, global_batch_size, model_bn_span, opt_* keys (opt_learning_rate_decay_steps:
        the decay epochs, as NVIDIA logs them), max_samples, gradient_accumulation_steps."""
        self._once("hyperparameters")
        self._log("event", mlc.SEED, int(hp.seed))
        self._log("event", mlc.MODEL_BN_SPAN, int(hp.model_bn_span))
        self._log("event", mlc.GLOBAL_BATCH_SIZE, int(hp.global_batch_size))
        self._log("event", mlc.OPT_BASE_LR, float(hp.base_learning_rate))
        decay_epochs = [int(e) for e in hp.decay_boundary_epochs]
        self._log("event", mlc.OPT_LR_DECAY_BOUNDARY_EPOCHS, decay_epochs)
        # NVIDIA v0.7 logs the decay epochs under this key too (the rules ignore it)
        self._log("event", mlc.OPT_LR_DECAY_STEPS, decay_epochs)
        self._log("event", mlc.OPT_LR_DECAY_FACTOR, float(hp.decay_factor))
        self._log("event", mlc.OPT_WEIGHT_DECAY, float(hp.weight_decay))
        self._log("event", mlc.OPT_LR_WARMUP_STEPS, int(hp.warmup_steps))
        self._log("event", mlc.OPT_LR_WARMUP_FACTOR, float(hp.warmup_factor))
        self._log("event", mlc.MAX_SAMPLES, int(hp.max_samples))
        self._log("event", mlc.GRADIENT_ACCUMULATION_STEPS, int(hp.gradient_accumulation_steps))

    def init_stop(self) -> None:
        self._require(mlc.INIT_START, mlc.INIT_STOP)
        self._once(mlc.INIT_STOP)
        self._log("end", mlc.INIT_STOP)

    def run_start(self) -> None:
        self._require(mlc.INIT_STOP, mlc.RUN_START)
        self._once(mlc.RUN_START)
        self._log("start", mlc.RUN_START)

    def dataset_sizes(self, *, train_samples: int, eval_samples: int) -> None:
        """train_samples / eval_samples: only known from the dataset, hence after run_start."""
        self._require(mlc.RUN_START, mlc.TRAIN_SAMPLES)
        self._once(mlc.TRAIN_SAMPLES)
        self._log("event", mlc.TRAIN_SAMPLES, int(train_samples))
        self._log("event", mlc.EVAL_SAMPLES, int(eval_samples))

    # -- training --------------------------------------------------------------------------
    def block_start(self, first_epoch: int, epoch_count: int) -> None:
        """Start of `epoch_count` epochs trained before the next evaluation; 0-based first_epoch."""
        self._require(mlc.RUN_START, mlc.BLOCK_START)
        if epoch_count < 1:
            raise ValueError(f"block epoch_count must be >= 1, got {epoch_count}")
        if self._open_block is not None:
            raise RuntimeError("block_start while a block is open: call block_stop first")
        self._open_block = first_epoch + 1
        self._log(
            "start",
            mlc.BLOCK_START,
            None,
            {mlc.FIRST_EPOCH_NUM: first_epoch + 1, mlc.EPOCH_COUNT: int(epoch_count)},
        )

    def block_stop(self) -> None:
        if self._open_block is None:
            if not self.enabled:
                return
            raise RuntimeError("block_stop without block_start")
        first, self._open_block = self._open_block, None
        self._log("end", mlc.BLOCK_STOP, None, {mlc.FIRST_EPOCH_NUM: first})

    def epoch_start(self, epoch: int, iteration: int | None = None) -> None:
        """Start of the 0-based `epoch` (logged as epoch_num = epoch + 1) at the 0-based
        `iteration` (logged as current_iter_num; the trainer always passes it: the first
        iteration of the epoch, NVIDIA DGX A100: 0, 129, 258, 386, ...)."""
        self._require(mlc.RUN_START, mlc.EPOCH_START)
        self._log("start", mlc.EPOCH_START, None, self._epoch_meta(epoch + 1, iteration))

    def epoch_stop(self, epoch: int, iteration: int | None = None) -> None:
        """End of the 0-based `epoch` (logged as epoch_num = epoch + 1); `iteration` (logged as
        current_iter_num) is the 0-based iteration at which it stops, i.e. the first of the next
        epoch, as NVIDIA's loop logs it."""
        self._log("end", mlc.EPOCH_STOP, None, self._epoch_meta(epoch + 1, iteration))

    @staticmethod
    def _epoch_meta(epoch_num: int, iteration: int | None) -> dict[str, int]:
        meta = {mlc.EPOCH_NUM: int(epoch_num)}
        if iteration is not None:
            meta["current_iter_num"] = int(iteration)
        return meta

    # -- evaluation ------------------------------------------------------------------------
    def eval_start(self, epochs_done: int) -> None:
        """Start of the evaluation after `epochs_done` finished epochs (logged as epoch_num)."""
        self._require(mlc.RUN_START, mlc.EVAL_START)
        self._log("start", mlc.EVAL_START, None, {mlc.EPOCH_NUM: int(epochs_done)})

    def eval_accuracy(self, accuracy: float, epochs_done: int) -> None:
        """COCO box mAP (IoU .50:.95) of the evaluation after `epochs_done` epochs."""
        self._require(mlc.RUN_START, mlc.EVAL_ACCURACY)
        self._log("event", mlc.EVAL_ACCURACY, float(accuracy), {mlc.EPOCH_NUM: int(epochs_done)})

    def eval_stop(self, epochs_done: int) -> None:
        self._log("end", mlc.EVAL_STOP, None, {mlc.EPOCH_NUM: int(epochs_done)})

    def eval_result(self, accuracy: float, epochs_done: int) -> None:
        """eval_start, eval_accuracy and eval_stop together, for an asynchronously scored result."""
        self._require(mlc.RUN_START, mlc.EVAL_ACCURACY)
        meta = {mlc.EPOCH_NUM: int(epochs_done)}
        at = self._clock()  # one timestamp for the three lines, as NVIDIA's async results have
        self._log("start", mlc.EVAL_START, None, meta, at=at)
        self._log("event", mlc.EVAL_ACCURACY, float(accuracy), meta, at=at)
        self._log("end", mlc.EVAL_STOP, None, meta, at=at)

    # -- end -------------------------------------------------------------------------------
    @property
    def run_started(self) -> bool:
        return mlc.RUN_START in self._seen

    @property
    def run_stopped(self) -> bool:
        return mlc.RUN_STOP in self._seen

    def run_stop(self, status: RunStatus) -> None:
        """'success' when the target was reached, 'aborted' otherwise."""
        if status not in ("success", "aborted"):
            raise ValueError(f"run_stop status must be 'success' or 'aborted', got {status!r}")
        self._require(mlc.RUN_START, mlc.RUN_STOP)
        self._once(mlc.RUN_STOP)
        if self._open_block is not None:
            self.block_stop()
        self._log("end", mlc.RUN_STOP, None, {mlc.STATUS: status})

    def close(self) -> None:
        """Log run_stop('aborted') if the run started without stopping; close the file."""
        if self._logger is None:
            return
        if self.run_started and not self.run_stopped:
            self.run_stop("aborted")
        failure = None
        for handler in list(self._logger.handlers):
            self._logger.removeHandler(handler)
            try:
                handler.flush()
                if isinstance(handler, logging.FileHandler):
                    handler.close()
            except OSError as error:  # the last lines did not reach the disk
                from ssd_train.resilience.environment import write_failure

                if isinstance(handler, _RaisingFileHandler) and handler.failure:
                    continue  # reported by the call that failed
                path = Path(getattr(handler, "baseFilename", "stdout"))
                failure = failure or write_failure(path, error, what="MLPerf log") or error
        if failure is not None:
            raise failure

    def __enter__(self) -> MLPerfLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
