"""The training run: MLPerf-ordered start-up, the sample-stream loop, evaluations and stopping.

``Trainer(settings).train()`` does, in MLPerf's order (spec 6.1): submission header, init_start,
hyperparameters; model, optimiser, compiled step (warmed up on synthetic tensors); init_stop,
run_start; only then the data loaders; then optimiser steps over the never-dropping sample stream
(NVIDIA v0.7's epoch clock: epoch e starts at batch ``ceil(e * shard / batch)``) with evaluations
after the configured epochs, scored asynchronously, until mAP >= target or max epochs/steps.

The trainer builds and owns its parts: the checkpoint manager (resume at start; saves every N
steps, at evaluation epochs, on a stop request and at max_steps), the stop request, the step
watchdog, the weights exporter (best.pt / last.pt), the non-finite-loss policy and the run's
evaluations. :meth:`Trainer.state_dict` / :meth:`load_state_dict` hold what a resume needs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from ssd_data import TrainLoader, build_train_loader

from ssd_train.checkpoint.manager import (
    CheckpointManager,
    apply_training_state,
    run_fingerprint,
    training_state,
)
from ssd_train.checkpoint.weights import WeightsExporter
from ssd_train.components import DetectorFactory, build_components, cpu_has_fast_bf16
from ssd_train.distributed import (
    average_bn_statistics,
    destroy,
    init_distributed,
    seed_everything,
    set_collective_timeout,
)
from ssd_train.lr_schedule import LRSchedule, decay_steps_from_epochs
from ssd_train.optim import device_learning_rates
from ssd_train.report.mlperf_log import evaluation_blocks
from ssd_train.report.reporter import RunReporter, class_names_of
from ssd_train.resilience.environment import first_failure_wins
from ssd_train.resilience.fault_injection import FaultInjector
from ssd_train.resilience.nonfinite import NonFiniteGuard
from ssd_train.resilience.preemption import StopRequest
from ssd_train.resilience.watchdog import StepWatchdog
from ssd_train.run_setup import RunOutcome, RunStatus, start_run
from ssd_train.settings import Settings
from ssd_train.train_step import StepOutput
from ssd_train.validation import EvalHistory, Evaluation, RunEvaluations


class Trainer:
    """One training run (one segment of it, when resumed). See the module docstring for the order.

    Args:
        settings: resolved settings with the dataset and ``model.num_classes`` known
            (``ssd_train.dataset.prepare_dataset``).
        synthetic_data: the dataset is ssd_data's synthetic one (logs the open division).
        detector_factory: network, loss and post-processing (None = SSD300; see build_components).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        synthetic_data: bool = False,
        detector_factory: DetectorFactory | None = None,
    ) -> None:
        s = self.settings = settings
        ctx = self.ctx = init_distributed(s.distributed, s.device)
        if s.num_threads:
            torch.set_num_threads(s.num_threads)
        start = start_run(s, ctx, synthetic_data=synthetic_data)
        self.run_dir, self.seed, self.mllog = start.run_dir, start.seed, start.mllog
        self.global_batch, self.base_lr = start.global_batch, start.base_lr
        seed_everything(self.seed + ctx.rank)
        self.reporter = RunReporter(
            self.run_dir,
            s.logging,
            rank=ctx.rank,
            max_epochs=s.schedule.max_epochs,
            target_map=s.schedule.target_map,
            settings=s.model_dump(mode="json"),
        )

        c = self.components = build_components(s, ctx, detector_factory=detector_factory)
        self.reporter.device_line(ctx.device, s.precision, c.autocast_dtype, cpu_has_fast_bf16())
        self.model, self.optimizer = c.model, c.optimizer
        res = s.resilience
        self.checkpoints = CheckpointManager(
            s.checkpoint,
            self.run_dir,
            fingerprint=run_fingerprint(s, ctx.world_size),
            settings_json=s.model_dump_json(),
        )
        self.stop_request = StopRequest(self.run_dir, res.preemption, device=ctx.device).install()
        self.stop_request.clear_stale_marker()
        wd = res.watchdog
        self.watchdog = StepWatchdog(self.run_dir, ctx.rank, wd).start() if wd.enabled else None
        self.exporter = WeightsExporter(self.run_dir, s.model_dump(mode="json"), ctx.rank)
        self.nonfinite = NonFiniteGuard(self.optimizer, res.nonfinite, ctx.device)
        injector = FaultInjector(res.faults, self.run_dir, ctx.rank, lambda: self.step)
        self.fault_injector = injector.install(c.eval_model) if injector.active else None

        # progress (part of the state)
        self.step = 0  # optimiser steps done
        self.epoch = 0  # 0-based epoch in progress (= epochs done at an epoch boundary)
        self.evals = EvalHistory()
        self.done: tuple[RunStatus, str] | None = None
        self._last_lr = 0.0
        # built after run_start
        self.train_loader: TrainLoader | None = None
        self.evaluations: RunEvaluations | None = None
        self.schedule: LRSchedule | None = None
        self._class_names: list[str] = []

    # -- the step -----------------------------------------------------------------------------
    def train_step(self, micro_batches: list[Any]) -> StepOutput:
        """One optimiser step at the current LR over ``micro_batches`` (no host sync)."""
        assert self.schedule is not None
        self._last_lr = self.schedule.apply(self.optimizer, self.step)
        out = self.components.train_step(micro_batches)
        self.nonfinite.record(out.finite, self.step)
        self.step += 1
        return out

    def epoch_start_step(self, epoch: int) -> int:
        """The optimiser step at which 0-based ``epoch`` starts (micro-batches: see lr_schedule)."""
        assert self.train_loader is not None
        k = self.settings.optim.grad_accumulation_steps
        return -(-self.train_loader.epoch_start_batch(epoch) // k)

    # -- run ----------------------------------------------------------------------------------
    def train(self) -> RunOutcome:
        """Run until the target mAP, max epochs/steps, a stop request, or an error (re-raised)."""
        s = self.settings
        try:
            if self.components.compiled:
                self.components.warm_up(s, seed=self.seed)
            self.mllog.init_stop()
            self.mllog.run_start()
            set_collective_timeout(s.distributed.timeout_s)
            self._build_data()
            self._resume()
            self.checkpoints.warn_if_low_space(self.model, self.optimizer, self.reporter.message)
            self._loop()
            last = self.evals.results[-1].map if self.evals.results else None
            self.exporter.on_run_end(
                self.model, step=self.step, epoch=self.epoch, last_map=last,
                best_map=self.evals.best_map,
            )  # fmt: skip
        except BaseException:
            self.done = self.done or ("aborted", "error")
            raise
        finally:
            self.done = self.done or ("aborted", "interrupted")
            self._report_end()
        results = [{"epoch": r.epoch, "map": r.map} for r in self.evals.results]
        return RunOutcome(
            *self.done, self.run_dir, self.step, self.epoch, self.evals.best_map, results
        )

    @first_failure_wins()  # in ``finally``: a full disk while checkpointing stays the error
    def _report_end(self) -> None:
        """run_stop, data counts, results.png, the final lines with the continue command."""
        assert self.done is not None
        if self.mllog.run_started and not self.mllog.run_stopped:
            self.mllog.run_stop(self.done[0])
        ev, loader = self.evaluations, self.train_loader
        train_stats = loader.stats() if loader is not None else None
        val_stats = ev.evaluation.loader.stats() if ev is not None else None
        self.reporter.data_counts(train_stats, val_stats, step=self.step)
        best = self.evals.best_map if self.evals.results else None
        self.reporter.final(*self.done, epochs=self.epoch, steps=self.step, best_map=best)

    def _build_data(self) -> None:
        s, ctx = self.settings, self.ctx
        self.train_loader = build_train_loader(
            s.data, ctx.rank, ctx.world_size, self.seed, device=ctx.device
        )
        c = self.components
        evaluation = Evaluation.for_run(
            s,
            ctx,
            c.postprocessor,
            c.autocast_dtype,
            keep_first_batch=ctx.is_main and s.logging.plots,
        )
        self._class_names = class_names_of(evaluation.evaluator.gt)
        self.exporter.categories = evaluation.evaluator.gt.dataset["categories"]
        self.evaluations = RunEvaluations(
            evaluation,
            self.evals,
            target_map=s.schedule.target_map,
            mllog=self.mllog,
            reporter=self.reporter,
            exporter=self.exporter,
            class_names=self._class_names,
        )
        train_samples = self.train_loader.num_samples
        self.mllog.dataset_sizes(train_samples=train_samples, eval_samples=evaluation.num_samples)
        sch = s.schedule
        self.schedule = LRSchedule(
            self.base_lr,
            sch.warmup_iterations,
            sch.warmup_factor,
            decay_steps_from_epochs(
                self.train_loader.epoch_start_batch,
                sch.decay_epochs,
                s.optim.grad_accumulation_steps,
            ),
            sch.decay_factor,
        )

    def _loop(self) -> None:
        s = self.settings.schedule
        eval_after = [e for e in range(1, s.max_epochs + 1) if s.is_eval_epoch(e)]
        blocks = evaluation_blocks(eval_after, s.max_epochs, start_epoch=self.epoch)
        block_ends = {first + count for first, count in blocks}
        block_firsts = dict(blocks)
        assert self.train_loader is not None
        batches = iter(self.train_loader)
        while self.done is None and self.epoch < s.max_epochs:
            if self.epoch in block_firsts:
                self.mllog.block_start(self.epoch, block_firsts[self.epoch])
            if not self._train_epoch(batches):
                break
            if self.epoch in block_ends:
                self.mllog.block_stop()
            if s.is_eval_epoch(self.epoch):
                self._evaluate(self.epoch)
            if self._max_steps_reached() and self.done is None:
                self._stop_at_max_steps()
        if self.done is None:
            self._receive_results(wait=True)
        if self.done is None:
            self.done = ("aborted", "max_steps" if self._max_steps_reached() else "max_epochs")

    def _max_steps_reached(self) -> bool:
        limit = self.settings.schedule.max_steps
        return limit is not None and self.step >= limit

    def _stop_at_max_steps(self) -> None:
        """Settle evaluations, checkpoint the step that hit ``schedule.max_steps``, stop."""
        self._receive_results(wait=True)
        if self.done is None:
            self.save_checkpoint("max_steps")
            self.done = ("aborted", "max_steps")

    def _train_epoch(self, batches: Any) -> bool:
        """Train (the rest of) the current epoch; False when the run stopped inside it."""
        accum = self.settings.optim.grad_accumulation_steps
        start, end = self.epoch_start_step(self.epoch), self.epoch_start_step(self.epoch + 1)
        self.mllog.epoch_start(self.epoch, self.step)
        self.reporter.epoch_start(self.epoch, end - start, self.step - start)
        while self.step < end:
            t0 = time.perf_counter()
            micro = [next(batches).to(self.ctx.device, non_blocking=True) for _ in range(accum)]
            waited = time.perf_counter() - t0
            self.reporter.train_batch(micro[0], self._class_names)
            if self.watchdog is not None:
                with self.watchdog.step(self.step):
                    out = self.train_step(micro)
            else:
                out = self.train_step(micro)
            self.reporter.step_done(self.global_batch, waited, step=self.step)
            self._after_step(out, end_of_epoch=self.step == end)
            if self.done is not None:
                self.reporter.epoch_end()
                return False
        self.epoch += 1
        self.reporter.epoch_end()
        self.mllog.epoch_stop(self.epoch - 1, self.step)
        return True

    def _after_step(self, out: StepOutput, *, end_of_epoch: bool) -> None:
        """Logging steps (the only host syncs), result polling, stop requests, periodic saves."""
        max_steps = self._max_steps_reached()
        if self.step % self.settings.logging.log_every == 0 or end_of_epoch or max_steps:
            self._log_step(out)
            self._receive_results(wait=False)
        if self.done is None and max_steps and not end_of_epoch:
            self._stop_at_max_steps()  # at an epoch end, the epoch's evaluation comes first
        if self.done is None and self.stop_request.should_stop(self.step):
            self.save_checkpoint("stop")
            self.done = ("aborted", "ctrl_c" if self.stop_request.interrupted else "stop_requested")
        if self.done is None and self.checkpoints.due(self.step):
            self.save_checkpoint("periodic")

    def check_finite(self) -> None:
        """Raise NonFiniteLossError naming the first bad step (a host sync: logging, saves)."""
        self.nonfinite.check(self.epoch, self.checkpoints.last_saved)

    def _log_step(self, out: StepOutput) -> None:
        values = torch.stack([out.loss, out.loc, out.conf, out.grad_norm]).tolist()
        self.check_finite()
        extra = {"grad_norm": values[3]} if self.settings.optim.grad_clip_norm is not None else {}
        self.reporter.log_step(
            step=self.step,
            epoch=self.epoch,
            step_in_epoch=self.step - self.epoch_start_step(self.epoch),
            losses={"total": values[0], "loc": values[1], "conf": values[2]},
            lr=self._last_lr,
            device=self.ctx.device,
            extra=extra,
        )

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, epochs_done: int) -> None:
        assert self.evaluations is not None
        average_bn_statistics(self.components.eval_model)
        if self.settings.checkpoint.enabled and self.settings.checkpoint.at_eval_epochs:
            self.save_checkpoint("eval")
        self.evaluations.start(
            self.model, self.components.eval_model, step=self.step, epochs_done=epochs_done
        )
        self._check_target()
        if self.settings.schedule.max_epochs == epochs_done:
            self._receive_results(wait=True)

    def _receive_results(self, *, wait: bool) -> None:
        if self.evaluations is not None:
            self.evaluations.receive(self.model, wait=wait, step=self.step, epoch=self.epoch)
            self._check_target()

    def _check_target(self) -> None:
        if self.evaluations is not None and self.evaluations.success and self.done is None:
            self.done = ("success", self.evaluations.success)

    # -- checkpoints --------------------------------------------------------------------------
    def _resume(self) -> None:
        """Restore the checkpoint chosen by ``checkpoint.resume`` (collective; None = fresh)."""
        path = self.checkpoints.resume_path()
        if path is None:
            return
        restored = self.checkpoints.load(path, self.state_dict())
        self.load_state_dict(restored.state)
        self.reporter.message(f"resumed from {path} (step {self.step}, epoch {self.epoch})")

    def save_checkpoint(self, reason: str) -> Path | None:
        """Settle evaluations, refuse NaN state, average BN statistics and save (collective).

        ``reason="stop"``: the save is synchronous and rank 0 then writes the requeue marker.
        """
        self.check_finite()
        self._receive_results(wait=True)
        stop = reason == "stop"
        path = None
        if self.settings.checkpoint.enabled:
            average_bn_statistics(self.model)
            path = self.checkpoints.save(self.step, self.state_dict(), epoch=self.epoch, block=stop)
        if stop:
            self.stop_request.acknowledge(self.step, path)
        return path

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, in the checkpoint manager's layout: model and optimiser
        (DCP), this rank's data position and RNG states, and the shared progress, LR schedule and
        evaluation history. Pending asynchronous evaluations must be settled first."""
        progress = {"step": self.step, "epoch": self.epoch, "seed": self.seed}
        progress |= {"global_batch": self.global_batch, "world_size": self.ctx.world_size}
        return training_state(
            self.model,
            self.optimizer,
            data=self.train_loader.state_dict() if self.train_loader is not None else {},
            schedule=self.schedule.state_dict() if self.schedule is not None else {},
            progress=progress,
            evaluation=self.evals.state_dict(),
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (call after the data loaders exist)."""
        apply_training_state(self.model, self.optimizer, state)
        device_learning_rates(self.optimizer, self.ctx.device)  # loading replaced the LR tensors
        self.step, self.epoch = int(state["progress"]["step"]), int(state["progress"]["epoch"])
        if self.train_loader is not None and state.get("data"):
            self.train_loader.load_state_dict(state["data"])
        self.evals.load_state_dict(state["evaluation"])

    def close(self) -> None:
        """Release loaders, scorer process, logs, and the process group. Safe to call twice."""
        if self.evaluations is not None:
            self.evaluations.close()
            self.evaluations = None
        if self.train_loader is not None:
            self.train_loader.close()
            self.train_loader = None
        for part in (self.watchdog, self.stop_request, self.checkpoints, self.nonfinite):
            if part is not None:
                part.close()
        if self.fault_injector is not None:
            self.fault_injector.close()
        self.reporter.close(0 if self.done and self.done[0] == "success" else 1)
        self.mllog.close()
        destroy()
