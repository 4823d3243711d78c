"""The training run: MLPerf-ordered start-up, the epoch loop, evaluation schedule and stopping rule.

``Trainer(settings).train()`` does, in MLPerf's order (spec 6.1): submission header, init_start,
hyperparameters; model, optimiser, compiled step (and its warm-up on synthetic tensors);
init_stop, run_start; only then the data loaders; then epochs of optimiser steps with
evaluations at the configured epochs, scored asynchronously, until mAP >= target or max epochs.

Hook points for the resilience components (each a no-op while its object is ``None``):
``self.checkpointer`` (resume at start, save every N steps, at evaluation epochs and on stop),
``self.stop_request`` (collective stop agreement checked after steps), ``self.watchdog`` (wraps
every step), ``self.exporter`` (best/last weights). :meth:`state_dict` / :meth:`load_state_dict`
hold everything a resume needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from ssd_eval.result import EvalResult

from ssd_train.components import build_components
from ssd_train.distributed import (
    average_bn_statistics,
    init_distributed,
    seed_everything,
)
from ssd_train.evaluation import Evaluation, check_num_classes
from ssd_train.lr_schedule import LRSchedule, base_learning_rate
from ssd_train.report.mlperf_log import MLPerfLogger, evaluation_blocks
from ssd_train.report.reporter import RunReporter, class_names_of
from ssd_train.resilience.watchdog import set_collective_timeout
from ssd_train.run_setup import (
    caches_cleared,
    mlperf_division,
    mlperf_hyperparameters,
    platform_name,
    resolve_run_dir,
    resolve_seed,
    write_config,
)
from ssd_train.settings import Settings
from ssd_train.train_step import StepMetrics
from ssd_train.trainer_state import load_trainer_state, trainer_state_dict, warm_up_compiled_step

RunStatus = Literal["success", "aborted"]


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the message names the step."""


@dataclass
class RunOutcome:
    """How a training run ended."""

    status: RunStatus
    reason: str
    run_dir: Path
    steps: int
    epochs_done: int
    best_map: float
    results: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """One training run (one segment of it, when resumed). See the module docstring for the order.

    Args:
        settings: resolved settings (``ssd_train.settings.load_settings``).
        synthetic_data: the dataset is ssd_data's synthetic one (logs the open division).
    """

    def __init__(self, settings: Settings, *, synthetic_data: bool = False) -> None:
        s = self.settings = settings
        self.ctx = init_distributed(s.distributed, s.device)
        if s.num_threads:
            torch.set_num_threads(s.num_threads)
        self.run_dir = resolve_run_dir(s.run_dir, self.ctx)
        self.seed = resolve_seed(s.seed, self.run_dir, self.ctx)
        seed_everything(self.seed + self.ctx.rank)
        self.global_batch = s.global_batch_size(self.ctx.world_size)
        self.base_lr = base_learning_rate(s.optim.lr_per_32, self.global_batch)
        hp = mlperf_hyperparameters(s, self.seed, self.ctx.world_size)
        self.division = mlperf_division(s, hp, synthetic_data=synthetic_data)
        write_config(s, self.run_dir, self.ctx)

        self.mllog = MLPerfLogger(self.run_dir, s.logging.mlperf, rank=self.ctx.rank)
        self.mllog.submission_info(self.division, platform_name(s, self.ctx))
        self.mllog.cache_clear(caches_cleared())
        self.mllog.init_start()
        self.mllog.hyperparameters(hp)
        self.reporter = RunReporter(
            self.run_dir,
            s.logging,
            rank=self.ctx.rank,
            max_epochs=s.schedule.max_epochs,
            target_map=s.schedule.target_map,
            settings=s.model_dump(mode="json"),
        )

        c = self.components = build_components(s, self.ctx)
        self.model, self.optimizer = c.model, c.optimizer
        # progress (part of the state)
        self.step = 0  # optimiser steps done
        self.epoch = 0  # 0-based epoch in progress (= epochs done at an epoch boundary)
        self.results: list[EvalResult] = []
        self.evals_submitted = 0
        self.evals_received = 0
        self.best_map = 0.0
        self.done: tuple[RunStatus, str] | None = None
        self._first_nonfinite = torch.full((), -1, dtype=torch.int64, device=self.ctx.device)
        # built after run_start
        self.train_loader: Any = None
        self.evaluation: Evaluation | None = None
        self.schedule: LRSchedule | None = None
        self.steps_per_epoch = 0
        # resilience hook points (set by the resilience integration; None = off)
        self.checkpointer: Any = None
        self.stop_request: Any = None
        self.watchdog: Any = None
        self.exporter: Any = None
        self.nonfinite_skipper: Any = None  # resilience.nonfinite.policy = "skip"
        self._last_lr = 0.0
        self._class_names: list[str] = []
        from ssd_train.resilience.attach import attach_resilience

        attach_resilience(self)

    # -- the step -----------------------------------------------------------------------------
    def train_step(self, micro_batches: list[Any]) -> StepMetrics:
        """One optimiser step at the current LR over ``micro_batches`` (no host sync)."""
        assert self.schedule is not None
        lr = self.schedule.apply(self.optimizer, self.step)
        metrics = self.components.train_step(micro_batches)
        bad = ~metrics.finite & (self._first_nonfinite < 0)
        self._first_nonfinite = torch.where(bad, self.step, self._first_nonfinite)
        self.step += 1
        self._last_lr = lr
        return metrics

    # -- run ----------------------------------------------------------------------------------
    def train(self) -> RunOutcome:
        """Run until the target mAP, max epochs/steps, a stop request, or an error (then re-raised)."""
        s = self.settings
        try:
            if self.components.compiled:
                self._warm_up_compiled_step()
            self.mllog.init_stop()
            self.mllog.run_start()
            set_collective_timeout(s.distributed.timeout_s)
            self._build_data()
            self._resume()
            self._loop()
            if self.exporter is not None:
                self.exporter.on_run_end(self)
        except BaseException:
            self.done = self.done or ("aborted", "error")
            raise
        finally:
            if self.done is None:
                self.done = ("aborted", "interrupted")
            if self.mllog.run_started and not self.mllog.run_stopped:
                self.mllog.run_stop(self.done[0])
        status, reason = self.done
        self.reporter.message(
            f"run {status} ({reason}): best mAP {self.best_map:.4f} after {self.epoch} epochs,"
            f" {self.step} steps; run folder: {self.run_dir}"
        )
        return RunOutcome(
            status,
            reason,
            self.run_dir,
            self.step,
            self.epoch,
            self.best_map,
            [{"epoch": r.epoch, "map": r.map} for r in self.results],
        )

    def _build_data(self) -> None:
        from ssd_data.pipeline import build_eval_loader, build_train_loader

        s, ctx = self.settings, self.ctx
        self.train_loader = build_train_loader(s.data, ctx.rank, ctx.world_size, self.seed)
        eval_loader = build_eval_loader(s.data, ctx.rank, ctx.world_size)
        c = self.components
        self.evaluation = Evaluation(
            eval_loader,
            Path(s.data.val_annotations),
            c.postprocessor,
            s.eval,
            device=ctx.device,
            autocast_dtype=c.autocast_dtype,
            channels_last=s.channels_last,
            keep_first_batch=ctx.is_main and s.logging.plots,
        )
        self._class_names = class_names_of(self.evaluation.evaluator.gt)
        check_num_classes(
            self.evaluation.evaluator.gt.num_classes, s.model.num_classes, s.data.val_annotations
        )
        self.mllog.dataset_sizes(
            train_samples=self.train_loader.num_samples, eval_samples=self.evaluation.num_samples
        )
        self.steps_per_epoch = len(self.train_loader) // s.optim.grad_accumulation_steps
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training set gives {len(self.train_loader)} batches per epoch and rank, fewer than"
                f" optim.grad_accumulation_steps={s.optim.grad_accumulation_steps}: use a smaller"
                " data.batch_size or more images"
            )
        sch = s.schedule
        self.schedule = LRSchedule(
            self.base_lr,
            self.steps_per_epoch,
            sch.warmup_iterations,
            sch.warmup_factor,
            sch.decay_epochs,
            sch.decay_factor,
        )

    def _loop(self) -> None:
        s = self.settings.schedule
        eval_after = [e for e in range(1, s.max_epochs + 1) if s.is_eval_epoch(e)]
        blocks = evaluation_blocks(eval_after, s.max_epochs, start_epoch=self.epoch)
        block_ends = {first + count for first, count in blocks}
        block_firsts = dict(blocks)
        while self.done is None and self.epoch < s.max_epochs:
            if self.epoch in block_firsts:
                self.mllog.block_start(self.epoch, block_firsts[self.epoch])
            if not self._train_epoch():
                break
            if self.epoch in block_ends:
                self.mllog.block_stop()
            if s.is_eval_epoch(self.epoch):
                self._evaluate(self.epoch)
        if self.done is None:
            self._receive_results(wait=True)
        if self.done is None:
            self.done = ("aborted", "max_steps" if self._max_steps_reached() else "max_epochs")

    def _max_steps_reached(self) -> bool:
        limit = self.settings.schedule.max_steps
        return limit is not None and self.step >= limit

    def _train_epoch(self) -> bool:
        """Train (the rest of) the current epoch; False when the run stopped inside it."""
        accum = self.settings.optim.grad_accumulation_steps
        first = self.step - self.epoch * self.steps_per_epoch
        if first == 0:
            self.train_loader.set_epoch(self.epoch)
        self.mllog.epoch_start(self.epoch, self.step)
        self.reporter.epoch_start(self.epoch, self.steps_per_epoch, first)
        batches = iter(self.train_loader)
        for _ in range(first, self.steps_per_epoch):
            t0 = time.perf_counter()
            micro = [next(batches).to(self.ctx.device, non_blocking=True) for _ in range(accum)]
            waited = time.perf_counter() - t0
            self.reporter.train_batch(micro[0], self._class_names)
            if self.watchdog is not None:
                with self.watchdog.step(self.step):
                    metrics = self.train_step(micro)
            else:
                metrics = self.train_step(micro)
            self.reporter.step_done(self.global_batch, waited)
            self._after_step(metrics)
            if self.done is not None:
                self.reporter.epoch_end()
                return False
        self.epoch += 1
        self.reporter.epoch_end()
        self.mllog.epoch_stop(self.epoch - 1, self.step)
        return True

    def _after_step(self, metrics: StepMetrics) -> None:
        """Logging steps (the only host syncs), result polling, stop requests, periodic checkpoints."""
        log_every = self.settings.logging.log_every
        end_of_epoch = self.step % self.steps_per_epoch == 0
        if self.step % log_every == 0 or end_of_epoch or self._max_steps_reached():
            self._log_step(metrics)
            if self.evals_received < self.evals_submitted:
                self._receive_results(wait=False)
        if self.done is None and self._max_steps_reached():
            self._receive_results(wait=True)
            if self.done is None:
                self.done = ("aborted", "max_steps")
        if (
            self.stop_request is not None
            and self.done is None
            and self.stop_request.should_stop(self.step)
        ):
            self._save_checkpoint("stop")
            self.done = ("aborted", "stop_requested")
        if self.checkpointer is not None and self.done is None and self.checkpointer.due(self.step):
            self._save_checkpoint("periodic")

    def check_finite(self) -> None:
        """Raise NonFiniteLossError naming the first bad step (a host sync: logging steps, checkpoints).

        Under the ``skip`` policy the resilience skipper drops such updates instead.
        """
        if self.nonfinite_skipper is not None:
            return
        bad = int(self._first_nonfinite.item())
        if bad >= 0:
            last = getattr(self.checkpointer, "last_checkpoint", None)
            raise NonFiniteLossError(
                f"non-finite loss at step {bad} (epoch {self.epoch + 1}); last checkpoint: {last or 'none'}."
                " Lower the LR, enable optim.grad_clip_norm, check the data, or resume from that checkpoint."
            )

    def _log_step(self, metrics: StepMetrics) -> None:
        values = torch.stack([metrics.loss, metrics.loc, metrics.conf, metrics.grad_norm]).tolist()
        self.check_finite()
        extra = {"grad_norm": values[3]} if self.settings.optim.grad_clip_norm is not None else {}
        self.reporter.log_step(
            step=self.step,
            epoch=self.epoch,
            step_in_epoch=self.step - self.epoch * self.steps_per_epoch,
            losses={"total": values[0], "loc": values[1], "conf": values[2]},
            lr=self._last_lr,
            device=self.ctx.device,
            extra=extra,
        )

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, epochs_done: int) -> None:
        assert self.evaluation is not None
        average_bn_statistics(self.components.eval_model)
        if self.checkpointer is not None and self.checkpointer.at_eval_epochs:
            self._save_checkpoint("eval")
        if self.exporter is not None:
            self.exporter.on_evaluation_start(self, epochs_done)
        result = self.evaluation.run(self.components.eval_model, epochs_done)
        sample = self.evaluation.first_batch
        if sample is not None:
            self.reporter.val_predictions(*sample, self.evaluation.evaluator.gt, self._class_names)
        self.evals_submitted += 1
        if result is not None:
            self._handle_results([result])
        elif self.settings.schedule.max_epochs == epochs_done:
            self._receive_results(wait=True)

    def _receive_results(self, *, wait: bool) -> None:
        if self.evaluation is None or self.evals_received >= self.evals_submitted:
            return
        self._handle_results(self.evaluation.poll(wait=wait))

    def _handle_results(self, results: list[EvalResult]) -> None:
        target = self.settings.schedule.target_map
        for result in results:
            self.evals_received += 1
            self.results.append(result)
            self.best_map = max(self.best_map, result.map)
            epochs_done = int(result.epoch) if result.epoch is not None else self.epoch
            self.mllog.eval_result(result.map, epochs_done)
            self.reporter.evaluation(result, epochs_done=epochs_done, step=self.step)
            if self.exporter is not None:
                self.exporter.on_evaluation(self, result)
            if result.map >= target and self.done is None:
                self.done = (
                    "success",
                    f"mAP {result.map:.4f} >= {target} after epoch {epochs_done}",
                )

    # -- resilience hooks ---------------------------------------------------------------------
    def _resume(self) -> None:
        """Restore the latest complete checkpoint through ``self.checkpointer`` (if any)."""
        if self.checkpointer is not None:
            self.checkpointer.maybe_resume(self)

    def _save_checkpoint(self, reason: str) -> None:
        """Settle pending evaluations, refuse NaN state, and save through ``self.checkpointer``."""
        if self.checkpointer is None:
            return
        self.check_finite()
        self._receive_results(wait=True)
        self.checkpointer.save(self, reason=reason)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (see :func:`ssd_train.trainer_state.trainer_state_dict`)."""
        return trainer_state_dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (call after the data loaders exist)."""
        load_trainer_state(self, state)

    def _warm_up_compiled_step(self) -> None:
        warm_up_compiled_step(self)

    def close(self) -> None:
        """Release loaders, scorer process, logs, and the process group. Safe to call twice."""
        from ssd_train.distributed import destroy

        if self.evaluation is not None:
            self.evaluation.close()
            self.evaluation = None
        if self.train_loader is not None:
            self.train_loader.close()
            self.train_loader = None
        for obj in (self.watchdog, self.stop_request, self.checkpointer):
            closer = getattr(obj, "close", None)
            if callable(closer):
                closer()
        self.reporter.close(0 if self.done and self.done[0] == "success" else 1)
        self.mllog.close()
        destroy()
