"""Scoring detection rows against a ground truth with faster-coco-eval (or pycocotools).

faster-coco-eval's COCOeval_faster reproduces pycocotools' COCOeval bbox results (its
evaluateImg/accumulate are C++ ports of the same algorithm); tests/eval checks all 12 stats agree
to 1e-9. pycocotools is only a dev dependency, used for comparison (`--backend pycocotools`).
"""

from __future__ import annotations

import contextlib
import gc
import io
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from ssd_eval.confusion import GroundTruthBoxes, confusion_matrix
from ssd_eval.detections import check_rows, rows_to_records
from ssd_eval.groundtruth import GroundTruth
from ssd_eval.per_class import category_names, ground_truth_counts, per_class_from_accumulated
from ssd_eval.result import STAT_NAMES, EvalResult

Backend = Literal["faster", "pycocotools"]
BACKENDS: tuple[str, ...] = ("faster", "pycocotools")


class BackendUnavailableError(RuntimeError):
    """The chosen scoring library is not installed."""


def _silent(*args: Any, **kwargs: Any) -> None:
    """print_function for faster-coco-eval that prints nothing."""


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            "the pycocotools backend needs pycocotools: `uv sync` (dev group) or `pip install pycocotools`"
        ) from None
    return COCO, COCOeval


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: scoring allocates millions of small dicts and
    lists (no reference cycles), and repeated collections over them cost more than the scoring."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class CocoScorer:
    """Indexed ground truth for one backend; scores detection rows, as often as asked.

    Args:
        gt: a checked ground truth (see ssd_eval.groundtruth.load_ground_truth).
        backend: "faster" (faster-coco-eval, default) or "pycocotools".
        per_class: also compute the per-category results (EvalResult.per_class): AP table and
            precision-recall curves from the same accumulated arrays, and the confusion matrix.
        confusion_score: score threshold of the confusion matrix's detections.
    """

    def __init__(
        self,
        gt: GroundTruth,
        backend: Backend = "faster",
        *,
        per_class: bool = True,
        confusion_score: float = 0.25,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown scoring backend {backend!r}; choose one of {BACKENDS}")
        self.gt = gt
        self.backend = backend
        self.per_class = per_class
        self.confusion_score = confusion_score
        self._gt_boxes: GroundTruthBoxes | None = None
        self._gt_counts: np.ndarray | None = None
        with contextlib.redirect_stdout(io.StringIO()):
            if backend == "faster":
                from faster_coco_eval import COCO

                self._coco_gt = COCO(gt.dataset, print_function=_silent)
            else:
                coco_cls, _ = _pycocotools()
                self._coco_gt = coco_cls()
                self._coco_gt.dataset = gt.dataset
                self._coco_gt.createIndex()

    def _load_results(self, rows: np.ndarray) -> Any:
        if self.backend == "faster":
            return self._faster_results(rows)
        records = rows_to_records(rows)
        if records:
            return self._coco_gt.loadRes(records)
        # pycocotools' loadRes crashes on an empty list; an empty result set is still scorable.
        coco_cls, _ = _pycocotools()
        empty = coco_cls()
        empty.dataset = self._results_dataset([])
        empty.createIndex()
        return empty

    def _results_dataset(self, annotations: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "images": list(self.gt.dataset["images"]),
            "categories": list(self.gt.dataset["categories"]),
            "annotations": annotations,
        }

    def _faster_results(self, rows: np.ndarray) -> Any:
        """The results COCO object that loadRes would build for bbox results, built directly:
        the same fields (bbox, score, area = w * h, id = index + 1, iscrowd = 0), without the
        unused segmentation polygon loadRes adds to every detection."""
        from faster_coco_eval import COCO

        image_ids = rows[:, 0].astype(np.int64).tolist()
        category_ids = rows[:, 6].astype(np.int64).tolist()
        boxes = rows[:, 1:5].tolist()
        scores = rows[:, 5].tolist()
        areas = (rows[:, 3] * rows[:, 4]).tolist()
        annotations = [
            {
                "image_id": image_id,
                "category_id": category_id,
                "bbox": box,
                "score": score,
                "area": area,
                "id": index,
                "iscrowd": 0,
            }
            for index, (image_id, category_id, box, score, area) in enumerate(
                zip(image_ids, category_ids, boxes, scores, areas, strict=True), start=1
            )
        ]
        coco_dt = COCO(print_function=_silent)
        coco_dt.dataset = self._results_dataset(annotations)
        coco_dt.createIndex()
        return coco_dt

    def _cocoeval(self, coco_dt: Any) -> Any:
        if self.backend == "faster":
            from faster_coco_eval import COCOeval_faster

            return COCOeval_faster(self._coco_gt, coco_dt, iouType="bbox", print_function=_silent)
        _, cocoeval_cls = _pycocotools()
        return cocoeval_cls(self._coco_gt, coco_dt, iouType="bbox")

    def score(
        self,
        rows: np.ndarray,
        epoch: int | None = None,
        *,
        check: bool = True,
        timings: dict[str, float] | None = None,
    ) -> EvalResult:
        """Score rows float64 [R, 7] (image_id, x, y, w, h, score, category_id; xywh in pixels).

        check: validate the rows first (DetectionsError naming the first bad record).
        timings: if given, filled with seconds for "load_results", "evaluate", "accumulate"
        (accumulate includes summarize) and, with per_class, "per_class" (the table and curves
        from the accumulated arrays, and the confusion matrix).
        """
        if check:
            check_rows(rows, self.gt)
        times = timings if timings is not None else {}
        with contextlib.redirect_stdout(io.StringIO()), _cyclic_gc_paused():
            start = time.perf_counter()
            coco_dt = self._load_results(rows)
            evaluator = self._cocoeval(coco_dt)
            times["load_results"] = time.perf_counter() - start
            start = time.perf_counter()
            evaluator.evaluate()
            times["evaluate"] = time.perf_counter() - start
            start = time.perf_counter()
            evaluator.accumulate()
            evaluator.summarize()
            times["accumulate"] = time.perf_counter() - start
        stats = np.asarray(evaluator.stats, dtype=np.float64)[: len(STAT_NAMES)]
        result = EvalResult.from_stats(stats.tolist(), epoch=epoch)
        if not self.per_class:
            return result
        start = time.perf_counter()
        per_class = self._per_class(evaluator, rows)
        times["per_class"] = time.perf_counter() - start
        return result._replace(per_class=per_class)

    def _per_class(self, evaluator: Any, rows: np.ndarray) -> Any:
        """PerClassResult from the evaluator's accumulated arrays, plus the confusion matrix."""
        if self._gt_boxes is None or self._gt_counts is None:
            self._gt_boxes = GroundTruthBoxes.from_ground_truth(self.gt)
            self._gt_counts = ground_truth_counts(self.gt)
        confusion = confusion_matrix(
            rows,
            self.gt,
            score_threshold=self.confusion_score,
            boxes=self._gt_boxes,
            names=tuple(category_names(self.gt)),
        )
        return per_class_from_accumulated(
            evaluator.eval,
            evaluator.params,
            self.gt,
            rows[:, 6],
            gt_counts=self._gt_counts,
            confusion=confusion,
        )
