"""Evaluation during and after training: inference on the validation shard of every rank, COCO scoring.

Every rank runs the model (eval mode, autocast, channels_last) over its shard of the validation
set, post-processes on the device and hands the detections to ``ssd_eval.CocoEvaluator``, which
gathers them to rank 0 and scores them synchronously or in a separate process
(``eval.asynchronous``). :meth:`Evaluation.poll` is collective: every rank gets the same finished
results at the same step, so all ranks stop together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from ssd_core import forward_normalized
from ssd_data import build_eval_loader
from ssd_eval import CocoEvaluator, EvalConfig, EvalResult
from torch import Tensor, nn

if TYPE_CHECKING:
    from ssd_data import EvalLoader

    from ssd_train.distributed import DistributedContext
    from ssd_train.settings import Settings


def scoring_config(cfg: EvalConfig, device: torch.device) -> EvalConfig:
    """``cfg`` with ``asynchronous`` resolved for ``device``: a value set in the settings is kept;
    unset, scoring runs in a separate process only when training runs on CUDA. On a CPU a scoring
    process would compete with training for the same cores, and a synchronous result is handled
    at the step that finished the evaluated epoch instead of some steps later."""
    if "asynchronous" in cfg.model_fields_set or device.type == "cuda":
        return cfg
    return cfg.model_copy(update={"asynchronous": False})


class Evaluation:
    """Runs inference and scoring for one run (build once, call :meth:`run` at each evaluation).

    Args:
        loader: ``ssd_data`` EvalLoader yielding ``EvalBatch(images uint8[N,3,300,300], image_ids, sizes)``;
            its index's label map is the one evaluation uses.
        annotations: ground-truth json of the validation set (the full file; scoring uses all of it).
        postprocessor: ``ssd_core.postprocess.PostProcessor``.
        cfg: the ``eval`` settings section.
        device: where inference runs.
        autocast_dtype: ``torch.bfloat16`` or None (fp32).
        channels_last: feed channels_last images.
        keep_first_batch: keep the first batch's images, ids and detections (CPU) in
            ``first_batch`` after each :meth:`infer`, for drawing.
    """

    def __init__(
        self,
        loader: EvalLoader,
        annotations: Path,
        postprocessor: Callable[[Tensor, Tensor], Any],
        cfg: EvalConfig,
        *,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        channels_last: bool,
        keep_first_batch: bool = False,
    ) -> None:
        self.loader = loader
        self.postprocessor = postprocessor
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.evaluator = CocoEvaluator(
            annotations,
            config=scoring_config(cfg, device),
            label_to_category_id=loader.index.label_to_category_id,
        )
        self.keep_first_batch = keep_first_batch
        self.first_batch: tuple[Tensor, Tensor, Any] | None = None

    @property
    def num_samples(self) -> int:
        """Images inferred over all ranks (logged as eval_samples)."""
        return int(self.loader.num_samples)

    @torch.no_grad()
    def infer(self, model: nn.Module) -> None:
        """Run ``model`` over this rank's validation shard and add the detections (no host sync)."""
        was_training = model.training
        model.eval()
        first = True
        try:
            for batch in self.loader:
                images = batch.images.to(self.device, non_blocking=True)
                loc, logits = forward_normalized(
                    model, images, self.autocast_dtype, self.channels_last
                )
                dets = self.postprocessor(loc, logits)
                # a barely trained model can decode boxes to +-inf: clip them to the image, as
                # torchvision's detectors do, so that COCO scoring sees valid boxes
                dets = dets._replace(boxes=dets.boxes.nan_to_num(0.0, 1.0, 0.0).clamp_(0.0, 1.0))
                self.evaluator.add(
                    batch.image_ids.to(self.device),
                    dets.boxes,
                    dets.scores,
                    dets.labels,
                    dets.counts,
                )
                if self.keep_first_batch and first:
                    cpu = type(dets)(*(t[:8].cpu() for t in dets))
                    self.first_batch = (batch.images[:8].cpu(), batch.image_ids[:8].cpu(), cpu)
                first = False
        finally:
            model.train(was_training)

    def run(
        self, model: nn.Module, epochs_done: int, *, asynchronous: bool | None = None
    ) -> EvalResult | None:
        """Infer, gather and score (collective). Returns the result now when synchronous, else None."""
        self.infer(model)
        return self.evaluator.evaluate(epochs_done, asynchronous=asynchronous)

    def poll(self, *, wait: bool = False) -> list[EvalResult]:
        """Finished asynchronous results, identical on every rank (collective)."""
        return self.evaluator.poll(wait=wait)

    @property
    def pending(self) -> int:
        """Asynchronous scorings in flight (rank 0's count; 0 on other ranks)."""
        return self.evaluator.pending

    def close(self) -> None:
        self.evaluator.close()

    @classmethod
    def for_run(
        cls,
        settings: Settings,
        ctx: DistributedContext,
        postprocessor: Callable[[Tensor, Tensor], Any],
        autocast_dtype: torch.dtype | None,
        *,
        keep_first_batch: bool = False,
    ) -> Evaluation:
        """The run's evaluation: this rank's shard of ``settings.data``'s validation set, scored
        against its annotation file with ``settings.eval``."""
        return cls(
            build_eval_loader(settings.data, ctx.rank, ctx.world_size, device=ctx.device),
            Path(settings.data.val_annotations),
            postprocessor,
            settings.eval,
            device=ctx.device,
            autocast_dtype=autocast_dtype,
            channels_last=settings.channels_last,
            keep_first_batch=keep_first_batch,
        )


@dataclass
class EvalHistory:
    """The run's evaluations so far (part of the trainer's checkpointed state).

    ``submitted`` counts evaluations started, ``received`` those whose result arrived (equal except
    while asynchronous scoring is in flight); ``results`` in arrival order.
    """

    results: list[EvalResult] = field(default_factory=list)
    submitted: int = 0
    received: int = 0
    best_map: float = 0.0

    @property
    def pending(self) -> bool:
        return self.received < self.submitted

    def add(self, result: EvalResult) -> None:
        self.received += 1
        self.results.append(result)
        self.best_map = max(self.best_map, result.map)

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and numbers; pending evaluations must be settled first (none in flight)."""
        return {
            "results": [[r.epoch if r.epoch is not None else -1, *r.stats] for r in self.results],
            "submitted": self.submitted,
            "received": self.received,
            "best_map": self.best_map,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.results = [
            EvalResult.from_stats(list(row[1:]), None if row[0] < 0 else int(row[0]))
            for row in state["results"]
        ]
        self.submitted = self.received = int(state["received"])
        self.best_map = float(state["best_map"])


class RunEvaluations:
    """The evaluations of one run: started after evaluation epochs, their (possibly asynchronous)
    results collected on every rank together, logged (MLPerf ``eval_accuracy``, metrics, console),
    exported as ``best.pt`` when they improve, and checked against the target.

    Args:
        evaluation: inference and scoring over the validation set.
        history: the run's :class:`EvalHistory` (checkpointed by the trainer).
        target_map: the stopping rule.
        mllog: ``report.mlperf_log.MLPerfLogger``; reporter: ``report.reporter.RunReporter``;
        exporter: ``checkpoint.weights.WeightsExporter``.
        class_names: contiguous label -> name, for the drawn predictions.
    """

    def __init__(
        self,
        evaluation: Evaluation,
        history: EvalHistory,
        *,
        target_map: float,
        mllog: Any,
        reporter: Any,
        exporter: Any,
        class_names: list[str],
    ) -> None:
        self.evaluation, self.history, self.target_map = evaluation, history, target_map
        self.mllog, self.reporter, self.exporter = mllog, reporter, exporter
        self.class_names = class_names
        self.success: str | None = None  # why the target is met, once it is

    def start(
        self, model: nn.Module, eval_model: nn.Module, *, step: int, epochs_done: int
    ) -> None:
        """Evaluate ``eval_model`` after ``epochs_done`` epochs (collective); a synchronous result
        is handled now, an asynchronous one by a later :meth:`receive`."""
        self.exporter.on_evaluation_start(model, step, epochs_done)
        result = self.evaluation.run(eval_model, epochs_done)
        sample = self.evaluation.first_batch
        if sample is not None:
            self.reporter.val_predictions(*sample, self.evaluation.evaluator.gt, self.class_names)
        self.history.submitted += 1
        if result is not None:
            self._handle([result], model, step=step, epoch=epochs_done)

    def receive(self, model: nn.Module, *, wait: bool, step: int, epoch: int) -> None:
        """Collect finished results (collective: every rank gets the same ones)."""
        if self.history.pending:
            self._handle(self.evaluation.poll(wait=wait), model, step=step, epoch=epoch)

    def _handle(
        self, results: list[EvalResult], model: nn.Module, *, step: int, epoch: int
    ) -> None:
        for result in results:
            self.history.add(result)
            epochs_done = int(result.epoch) if result.epoch is not None else epoch
            self.mllog.eval_result(result.map, epochs_done)
            best = result.map >= self.history.best_map  # add() has raised best_map to it
            self.reporter.evaluation(result, epochs_done=epochs_done, step=step, best=best)
            self.exporter.on_evaluation(model, result, step=step, epoch=epoch)
            if result.map >= self.target_map and self.success is None:
                self.success = (
                    f"mAP {result.map:.4f} >= {self.target_map} after epoch {epochs_done}"
                )

    def close(self) -> None:
        self.evaluation.close()
