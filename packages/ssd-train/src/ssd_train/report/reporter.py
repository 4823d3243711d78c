"""What the trainer tells people (rank 0): progress, metrics.jsonl, COCO tables, plots, drawn batches, wandb.

A facade over the observability modules (``metrics``, ``progress``, ``plots``, ``drawing``,
``wandb_logger``): the trainer calls :class:`RunReporter` only. Plot and drawing failures are
reported and never stop a run. Non-zero ranks do nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ssd_data import label_map
from ssd_eval import EvalResult, GroundTruth
from torch import Tensor

from ssd_train.report.config import LoggingConfig
from ssd_train.report.console import data_summary_line, device_precision_line, final_lines
from ssd_train.report.metrics import (
    EvalMetrics,
    MetricsWriter,
    StepMetrics,
    ThroughputMeter,
    peak_memory_gib,
)
from ssd_train.report.progress import Progress


class RunReporter:
    """Rank-0 reporting of one run segment.

    Args:
        run_dir: the run folder.
        cfg: the ``logging`` settings section.
        rank: this process's rank (only rank 0 reports).
        max_epochs: for the progress display.
        target_map: drawn in results.png.
        settings: the resolved settings as a dict (wandb's run config).
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: LoggingConfig,
        *,
        rank: int,
        max_epochs: int,
        target_map: float,
        settings: Mapping[str, Any],
    ) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.enabled = rank == 0
        self.target_map = target_map
        self.meter = ThroughputMeter()
        self.metrics = MetricsWriter(self.run_dir, rank=rank)
        self.max_epochs = max_epochs
        self.progress = Progress(
            max_epochs=max_epochs, rank=rank, mode=cfg.progress, log_every=cfg.log_every
        )
        self._data_counts: tuple[dict[str, int] | None, dict[str, int] | None] = (None, None)
        self._finished = False
        self.wandb: Any = None
        self._drew_train_batch = False
        if self.enabled and cfg.wandb.enabled:
            try:
                from ssd_train.report.wandb_logger import WandbLogger

                self.wandb = WandbLogger(
                    cfg.wandb, run_dir=self.run_dir, config=settings, rank=rank
                )
            except Exception as error:  # wandb is optional: say why and go on
                self.message(f"wandb disabled: {type(error).__name__}: {error}")

    # -- training -----------------------------------------------------------------------------
    def epoch_start(self, epoch: int, steps: int, done: int = 0) -> None:
        self.progress.start_epoch(epoch, steps, done)
        self.meter.reset()

    def step_done(self, images: int, data_wait_s: float, step: int | None = None) -> None:
        """Every step (no host sync): counts for img/s and the data-wait share; redraws the row.

        ``step``: optimiser steps done (lets the console leave logging steps to ``log_step``).
        """
        self.meter.add_step(images)
        self.meter.add_data_wait(data_wait_s)
        self.progress.advance(images=images, data_wait_s=data_wait_s, step=step)

    def log_step(
        self,
        *,
        step: int,
        epoch: int,
        step_in_epoch: int,
        losses: Mapping[str, float],
        lr: float,
        device: torch.device,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """A logging step (after the host sync that read ``losses``)."""
        images_s, wait = self.meter.read()
        m = StepMetrics(
            step=step,
            epoch=epoch,
            loss=dict(losses),
            lr=lr,
            images_per_sec=images_s,
            data_wait_share=wait,
            memory_gib=peak_memory_gib(device),
            extra=dict(extra or {}),
        )
        if not self.enabled:
            return
        self.metrics.log_step(m)
        self.progress.log(m, step_in_epoch)
        self._wandb_log(
            {
                "kind": "train",
                "step": step,
                "epoch": epoch,
                "loss": dict(losses),
                "lr": lr,
                "images_per_sec": images_s,
                "data_wait_share": wait,
            }
        )

    def epoch_end(self) -> None:
        self.progress.end_epoch()

    def train_batch(self, batch: Any, class_names: list[str]) -> None:
        """Draw the first training batch once (train_batch.jpg)."""
        if not self.enabled or self._drew_train_batch or not self.cfg.plots:
            return
        self._drew_train_batch = True
        try:
            from ssd_train.report.drawing import draw_train_batch

            path = draw_train_batch(
                batch.images,
                batch.boxes,
                batch.labels,
                class_names,
                self.run_dir / "train_batch.jpg",
                self.cfg.draw_images,
            )
            self._wandb_image("train_batch", path)
        except Exception as error:
            self.message(
                _not_written("draw the training batch", self.run_dir / "train_batch.jpg", error)
            )

    # -- evaluation ---------------------------------------------------------------------------
    def evaluation(
        self, result: EvalResult, *, epochs_done: int, step: int, best: bool = False
    ) -> None:
        """A finished evaluation: COCO table, metrics.jsonl record (with the per-category AP map
        when the result has per-category results), results.png, wandb. ``best``: the run's best
        evaluation so far, whose PR curves and confusion matrix go to the run folder (and wandb)."""
        if not self.enabled:
            return
        self.progress.show_eval(epochs_done, result.stats)
        per_class = result.per_class
        per_class_ap = None if per_class is None else per_class.ap_by_name()
        self.metrics.log_eval(
            EvalMetrics(
                epoch=epochs_done,
                map=result.map,
                stats=list(result.stats),
                step=step,
                per_class_ap=per_class_ap,
            )
        )
        record: dict[str, Any] = {"kind": "eval", "epoch": epochs_done, "step": step}
        record.update(map=result.map, stats=list(result.stats))
        if per_class_ap is not None:
            record["per_class_ap"] = per_class_ap
        self._wandb_log(record)
        if per_class is not None:
            self._per_class_outputs(per_class, epochs_done=epochs_done, best=best)
        self.plot()

    def _per_class_outputs(self, per_class: Any, *, epochs_done: int, best: bool) -> None:
        """wandb's per-category table (every evaluation); the best evaluation's pr_curves.png and
        confusion_matrix.png in the run folder (and wandb)."""
        if self.wandb is not None:
            try:
                self.wandb.log_table("per_class", per_class.records(), epochs_done)
            except Exception as error:
                print(f"wandb table failed: {error}", file=sys.stderr)
        if not (best and self.cfg.plots):
            return
        try:
            from ssd_eval.per_class_plots import write_plots

            for path in write_plots(per_class, self.run_dir):
                self._wandb_image(path.stem, path)
        except Exception as error:
            self.message(f"could not plot per-class results: {type(error).__name__}: {error}")

    def val_predictions(
        self,
        images: Tensor,
        image_ids: Tensor,
        detections: Any,
        gt: GroundTruth,
        class_names: list[str],
    ) -> None:
        """Draw validation predictions beside their ground truth (val_predictions.jpg)."""
        if not self.enabled or not self.cfg.plots:
            return
        try:
            from ssd_train.report.drawing import draw_val_predictions

            gt_boxes, gt_labels = ground_truth_boxes(gt, image_ids.tolist())
            path = draw_val_predictions(
                images,
                gt_boxes,
                gt_labels,
                detections.boxes,
                detections.scores,
                detections.labels,
                detections.counts,
                class_names,
                self.run_dir / "val_predictions.jpg",
                max_images=min(8, self.cfg.draw_images),
            )
            self._wandb_image("val_predictions", path)
        except Exception as error:
            path = self.run_dir / "val_predictions.jpg"
            self.message(_not_written("draw validation predictions", path, error))

    def plot(self) -> None:
        if not self.enabled or not self.cfg.plots:
            return
        try:
            from ssd_train.report.plots import plot_results

            path = plot_results(self.run_dir, self.target_map)
            self._wandb_image("results", path)
        except Exception as error:
            self.message(_not_written("plot results", self.run_dir / "results.png", error))

    # -- start and end ------------------------------------------------------------------------
    def device_line(
        self,
        device: torch.device,
        precision: str,
        autocast_dtype: torch.dtype | None,
        cpu_fast_bf16: bool,
    ) -> None:
        """Print the device and precision chosen and why (see ``console.device_precision_line``)."""
        self.message(device_precision_line(device, precision, autocast_dtype, cpu_fast_bf16))

    def data_counts(
        self,
        train: Mapping[str, int] | None,
        val: Mapping[str, int] | None,
        *,
        step: int | None = None,
    ) -> None:
        """The loaders' counters (``TrainLoader.stats()``, ``EvalLoader.stats()``): a ``data``
        record in metrics.jsonl, kept for the final summary. Call it at the end (and whenever)."""
        train_d = None if train is None else {k: int(v) for k, v in train.items()}
        val_d = None if val is None else {k: int(v) for k, v in val.items()}
        self._data_counts = (train_d, val_d)
        if self.enabled:
            try:  # called from the trainer's `finally`: never mask the run's own error
                self.metrics.log_data(train=train_d, val=val_d, step=step)
            except Exception as error:
                self.message(f"could not write the data counts: {type(error).__name__}: {error}")

    def final(
        self,
        status: str,
        reason: str,
        *,
        epochs: int,
        steps: int,
        best_map: float | None,
        run_dir: Path | None = None,
    ) -> None:
        """The last lines of a run, for every ending: how it ended (best mAP, or 'no evaluation
        yet' when ``best_map`` is None), the data counts, and, unless the target was met, the
        command that continues the run. Also writes results.png. Never raises (the trainer calls it
        from ``finally``)."""
        if not self.enabled:
            return
        self._finished = True
        self.plot()
        try:
            lines = final_lines(
                status=status,
                reason=reason,
                epochs=epochs,
                steps=steps,
                best_map=best_map,
                run_dir=run_dir or self.run_dir,
                target_map=self.target_map,
                max_epochs=self.max_epochs,
                data_summary=data_summary_line(*self._data_counts) or None,
            )
        except Exception as error:  # pragma: no cover - a bug here must not hide the ending
            lines = [f"run {status} ({reason}); could not summarise it: {error!r}"]
        for line in lines:
            self.message(line)

    # -- misc ---------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        if self.enabled:
            self.progress.message(text)

    def _wandb_log(self, record: dict[str, Any]) -> None:
        if self.wandb is not None:
            try:
                self.wandb.log({**record, "time": time.time()})
            except Exception as error:
                print(f"wandb log failed: {error}", file=sys.stderr)

    def _wandb_image(self, name: str, path: Path) -> None:
        if self.wandb is not None:
            try:
                self.wandb.log_image(name, path)
            except Exception as error:
                print(f"wandb image failed: {error}", file=sys.stderr)

    def close(self, exit_code: int = 0) -> None:
        """Close the console and metrics.jsonl; writes results.png when :meth:`final` did not."""
        if self.enabled and not self._finished:
            self._finished = True
            self.plot()
        self.progress.close()
        self.metrics.close()
        if self.wandb is not None:
            with contextlib.suppress(Exception):
                self.wandb.finish(exit_code)
            self.wandb = None


def class_names_of(gt: GroundTruth) -> list[str]:
    """``names[label]`` for contiguous labels (index 0 = background), from the json's category order."""
    return ["background", *(str(c.get("name", c["id"])) for c in gt.dataset["categories"])]


def ground_truth_boxes(gt: GroundTruth, image_ids: list[int]) -> tuple[Tensor, Tensor]:
    """Normalised ltrb boxes float [N, G, 4] and contiguous labels int64 [N, G] (0 = padding) of images."""
    label_of = label_map(gt.dataset["categories"])
    size = {
        int(i): (int(h), int(w))
        for i, h, w in zip(gt.image_ids, gt.heights, gt.widths, strict=True)
    }
    per_image: dict[int, list[tuple[list[float], int]]] = {i: [] for i in image_ids}
    for ann in gt.dataset["annotations"]:
        iid = int(ann["image_id"])
        if iid in per_image and not ann.get("iscrowd", 0):
            h, w = size[iid]
            x, y, bw, bh = ann["bbox"]
            per_image[iid].append(
                ([x / w, y / h, (x + bw) / w, (y + bh) / h], label_of[int(ann["category_id"])])
            )
    g = max(1, max(len(v) for v in per_image.values()) if per_image else 1)
    boxes = torch.zeros(len(image_ids), g, 4)
    labels = torch.zeros(len(image_ids), g, dtype=torch.int64)
    for row, iid in enumerate(image_ids):
        for j, (box, label) in enumerate(per_image[iid]):
            boxes[row, j] = torch.tensor(box)
            labels[row, j] = label
    return boxes, labels


def _not_written(what: str, path: Path, error: Exception) -> str:
    """The one line for a picture that could not be made: a write error of the environment names
    the file and the error (the run goes on; a checkpoint reports a full disk with exit 4)."""
    from ssd_train.resilience.environment import write_failure

    failure = write_failure(path, error) if isinstance(error, OSError) else None
    if failure is not None:
        return f"could not {what}: {failure}"
    return f"could not {what}: {type(error).__name__}: {error}"
