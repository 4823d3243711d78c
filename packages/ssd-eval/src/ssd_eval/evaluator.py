"""CocoEvaluator: collects detection tensors batch by batch, gathers them to rank 0, scores them
(synchronously, or asynchronously in a separate process), and shares the result with every rank.

Typical use in a training loop (every rank):

    labels = eval_loader.index.label_to_category_id     # the label map, from ssd_data
    evaluator = CocoEvaluator(cfg.data.val_annotations, cfg.eval, label_to_category_id=labels)
    for batch in eval_loader:
        dets = postprocess(*model(batch.images))
        evaluator.add(batch.image_ids, dets.boxes, dets.scores, dets.labels, dets.counts)
    result = evaluator.evaluate(epoch)          # EvalResult on every rank, or None when async
    ...
    for result in evaluator.poll():             # collective; every ~20 steps; same list everywhere
        ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_eval.async_scoring import AsyncScorer
from ssd_eval.config import EvalConfig
from ssd_eval.gather import (
    ProcessGroup,
    any_rank,
    broadcast_float64,
    padded_all_gather,
    rank_and_world,
)
from ssd_eval.groundtruth import GroundTruth, check_label_map, load_ground_truth
from ssd_eval.result import STAT_NAMES, EvalResult
from ssd_eval.scoring import CocoScorer
from ssd_eval.tensor_detections import (
    LookupTables,
    TensorDetectionsError,
    check_batch_shapes,
    concat_batches,
    pack_batch,
    to_coco_rows,
)

_NO_EPOCH = -1.0
_RESULT_WIDTH = 2 + len(STAT_NAMES)  # epoch, map, 12 stats


class EvaluationError(RuntimeError):
    """Evaluation failed on some rank; raised on every rank so that all stop together."""


def _encode_results(results: list[EvalResult]) -> torch.Tensor:
    """[n] results -> float64 [1 + n * 14]: count, then (epoch or -1, map, 12 stats) each."""
    values = [float(len(results))]
    for result in results:
        values += [_NO_EPOCH if result.epoch is None else float(result.epoch), result.map]
        values += result.stats
    return torch.tensor(values, dtype=torch.float64)


def _decode_results(payload: torch.Tensor) -> list[EvalResult]:
    values = payload.tolist()
    count = int(values[0])
    results = []
    for i in range(count):
        chunk = values[1 + i * _RESULT_WIDTH : 1 + (i + 1) * _RESULT_WIDTH]
        epoch = None if chunk[0] == _NO_EPOCH else int(chunk[0])
        results.append(EvalResult(map=chunk[1], stats=chunk[2:], epoch=epoch))
    return results


_FAILED = torch.tensor([-1.0], dtype=torch.float64)


class CocoEvaluator:
    """COCO box evaluator for detections given as tensors (see ssd_eval.tensor_detections).

    Args:
        gt: ground-truth json path, dict or GroundTruth; every rank loads it (image sizes are
            needed where the detections are converted).
        config: EvalConfig (asynchronous, backend, start_method, max_pending).
        label_to_category_id: int [C], the model's label map: entry i is the COCO category id of
            contiguous label i (1..C-1), entry 0 (background) unused. The caller builds it
            (interfaces.md "Label map"; ``ssd_data.label_to_category_id``); it is checked
            against the categories of ``gt``.
    """

    def __init__(
        self,
        gt: str | Path | Mapping[str, Any] | GroundTruth,
        config: EvalConfig | None = None,
        *,
        label_to_category_id: Sequence[int] | np.ndarray,
    ) -> None:
        self.config = config or EvalConfig()
        self._gt_source = gt if isinstance(gt, GroundTruth | Mapping) else str(gt)
        self.gt = load_ground_truth(gt)
        self.label_to_category_id = check_label_map(self.gt, label_to_category_id)
        self._tables: dict[torch.device, LookupTables] = {}
        self._scorer: CocoScorer | None = None
        self._async: AsyncScorer | None = None
        self._packed: list[torch.Tensor] = []
        self._counts: list[torch.Tensor] = []
        self._image_ids: list[torch.Tensor] = []
        self._gathered: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        """C = entries of the label map (categories + 1)."""
        return int(self.label_to_category_id.shape[0])

    def reset(self) -> None:
        """Forget the detections added so far (and the last gathered set)."""
        self._packed.clear()
        self._counts.clear()
        self._image_ids.clear()
        self._gathered = None

    def add(
        self,
        image_ids: torch.Tensor,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        counts: torch.Tensor,
    ) -> None:
        """Keep one batch of detections (on its device; no host sync).

        Args:
            image_ids: int64 [N], COCO image ids.
            boxes: float [N, K, 4], ltrb normalised to [0, 1] of the original image.
            scores: float [N, K].
            labels: int64 [N, K], contiguous labels 1..C-1.
            counts: int64 [N], valid detections per image (the first counts[i] of K).
        Values are checked at gather time (labels in range, known image ids, finite boxes
        with right >= left and bottom >= top); shapes and dtypes are checked here.
        """
        check_batch_shapes(image_ids, boxes, scores, labels, counts)
        self._packed.append(pack_batch(image_ids, boxes, scores, labels))
        self._counts.append(counts.detach())
        self._image_ids.append(image_ids.detach())
        self._gathered = None

    def _local_rows(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        device = self._packed[0].device if self._packed else torch.device("cpu")
        if device not in self._tables:
            self._tables[device] = LookupTables.from_ground_truth(
                self.gt, self.label_to_category_id, device
            )
        packed, counts = concat_batches(self._packed, self._counts, device)
        rows = to_coco_rows(packed, counts, self._tables[device], rank=rank)
        image_ids = (
            torch.cat([i.to(device, torch.int64) for i in self._image_ids])
            if self._image_ids
            else torch.zeros(0, dtype=torch.int64, device=device)
        )
        return rows, image_ids

    def gather(self, group: ProcessGroup | None = None) -> np.ndarray | None:
        """Convert and gather every rank's detections to rank 0 (collective when distributed).

        Returns rows float64 [R, 7] (image_id, x, y, w, h, score, category_id; xywh in
        original pixels) on rank 0, None on other ranks. Raises EvaluationError on every rank if
        any rank's detections are invalid, or if an image was added more than once.
        """
        rank, _ = rank_and_world(group)
        error: Exception | None = None
        try:
            rows, image_ids = self._local_rows(rank)
        except TensorDetectionsError as caught:
            error = caught
            rows = torch.zeros((0, 7), dtype=torch.float64)
            image_ids = torch.zeros(0, dtype=torch.int64)
        failed = any_rank(error is not None, group)
        if failed:
            if error is not None:
                raise EvaluationError(f"invalid detections: {error}") from error
            raise EvaluationError(f"invalid detections on rank(s) {failed}; see their errors")
        all_rows = padded_all_gather(rows, group)
        all_ids = padded_all_gather(image_ids, group)
        duplicate: str | None = None
        if rank == 0:
            ids = torch.cat([i.cpu() for i in all_ids]).numpy()
            unique, seen = np.unique(ids, return_counts=True)
            if (seen > 1).any():
                twice = unique[seen > 1]
                duplicate = (
                    f"{twice.size} image id(s) were added more than once (e.g. {twice[:5].tolist()}); "
                    "each image must be evaluated exactly once across all ranks (a padded "
                    "DistributedSampler repeats images)"
                )
            else:
                self._gathered = torch.cat([r.cpu() for r in all_rows]).numpy()
        if any_rank(duplicate is not None, group):
            raise EvaluationError(duplicate or "rank 0 found images added more than once")
        return self._gathered if rank == 0 else None

    def _sync_scorer(self) -> CocoScorer:
        if self._scorer is None:
            self._scorer = CocoScorer(
                self.gt,
                backend=self.config.backend,
                per_class=self.config.per_class,
                confusion_score=self.config.confusion_score,
            )
        return self._scorer

    def score(self, epoch: int | None = None) -> EvalResult:
        """Score the gathered detections in this process (rank 0 only; call gather() first)."""
        if self._gathered is None:
            raise RuntimeError("score() needs gathered detections: call gather() first (on rank 0)")
        return self._sync_scorer().score(self._gathered, epoch=epoch, check=False)

    def evaluate(
        self,
        epoch: int | None = None,
        *,
        asynchronous: bool | None = None,
        group: ProcessGroup | None = None,
    ) -> EvalResult | None:
        """Gather, score and share the result; collective. Clears the added detections.

        asynchronous (default: config.asynchronous): False scores now and returns the same
        EvalResult on every rank; True hands the detections to rank 0's scoring process and
        returns None (results come from poll()).
        """
        run_async = self.config.asynchronous if asynchronous is None else asynchronous
        try:
            rows = self.gather(group)
        finally:
            self._packed.clear()
            self._counts.clear()
            self._image_ids.clear()
        rank, _ = rank_and_world(group)
        if run_async:
            if rank == 0:
                assert rows is not None
                self._async_scorer().submit(epoch, rows)
            self._gathered = None
            return None
        payload: torch.Tensor | None = None
        failure: Exception | None = None
        local: list[EvalResult] = []
        if rank == 0:
            try:
                local = [self.score(epoch)]
                payload = _encode_results(local)
            except Exception as caught:
                failure, payload = caught, _FAILED
        results = self._share(payload, failure, group, local)
        self._gathered = None
        return results[0]

    def _async_scorer(self) -> AsyncScorer:
        if self._async is None:
            self._async = AsyncScorer(
                self._gt_source,
                backend=self.config.backend,
                start_method=self.config.start_method,
                max_pending=self.config.max_pending,
                per_class=self.config.per_class,
                confusion_score=self.config.confusion_score,
            )
        return self._async

    def _share(
        self,
        payload: torch.Tensor | None,
        failure: Exception | None,
        group: ProcessGroup | None,
        local: list[EvalResult],
    ) -> list[EvalResult]:
        """Broadcast rank 0's results (epoch, map, 12 stats each); rank 0 keeps its own
        ``local`` results, which also carry the per-category results (not broadcast)."""
        shared = broadcast_float64(payload, group)
        if shared.numel() == 1 and shared[0].item() == -1.0:
            if failure is not None:
                raise EvaluationError(f"COCO scoring failed: {failure}") from failure
            raise EvaluationError("COCO scoring failed on rank 0; see its error")
        decoded = _decode_results(shared)
        if len(local) != len(decoded):  # not rank 0
            return decoded
        return [
            d._replace(per_class=mine.per_class) for d, mine in zip(decoded, local, strict=True)
        ]

    def poll(self, *, wait: bool = False, group: ProcessGroup | None = None) -> list[EvalResult]:
        """Finished asynchronous results, the same list on every rank; collective.

        wait=False never blocks on scoring (rank 0 returns what has finished); wait=True waits
        for every submitted job. Each result carries the epoch passed to evaluate().
        """
        rank, _ = rank_and_world(group)
        payload: torch.Tensor | None = None
        failure: Exception | None = None
        found: list[EvalResult] = []
        if rank == 0:
            try:
                found = (
                    []
                    if self._async is None
                    else (self._async.wait() if wait else self._async.poll())
                )
                payload = _encode_results(found)
            except Exception as caught:
                failure, payload = caught, _FAILED
        return self._share(payload, failure, group, found)

    @property
    def pending(self) -> int:
        """Asynchronous jobs not yet returned by poll() (rank 0; 0 elsewhere)."""
        return 0 if self._async is None else self._async.pending

    def close(self) -> None:
        """Stop the scoring process, if one was started (pending results are dropped)."""
        if self._async is not None:
            self._async.close()
            self._async = None

    def __enter__(self) -> CocoEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
