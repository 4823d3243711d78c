"""Per-category results of one COCO box evaluation, read from the same accumulated arrays that give
the 12 COCO numbers (no second pass over the detections).

COCOeval's `accumulate()` leaves `eval["precision"]`, float [T, R, K, A, M] (T = 10 IoU thresholds
0.50:0.05:0.95, R = 101 recall thresholds, K categories sorted by id, A = 4 area ranges all / small /
medium / large, M = 3 detection limits 1 / 10 / 100) and `eval["recall"]`, float [T, K, A, M]; -1
marks "no ground truth in this category and area range". Each per-category number is the mean of
that category's entries that are not -1 (as detectron2's per-category table computes it), or -1
when all are -1, at the 100-detection limit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ssd_eval.confusion import ConfusionMatrix
from ssd_eval.groundtruth import GroundTruth

METRIC_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100")
"""Columns of PerClassResult.metrics (and keys of the JSON records, beside gt and detections)."""

MISSING = -1.0
"""Value of a number COCO cannot compute (no ground truth of the category in that area range)."""


def _masked_mean(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Mean over ``axes`` of the entries > -1; -1 where there are none. float64."""
    valid = values > -1
    count = valid.sum(axis=axes)
    total = np.where(valid, values, 0.0).sum(axis=axes, dtype=np.float64)
    return np.where(count > 0, total / np.maximum(count, 1), MISSING)


def category_names(gt: GroundTruth) -> list[str]:
    """Category names in file order (label order); a category without a name gets its id."""
    return [str(c.get("name", c["id"])) for c in gt.dataset["categories"]]


def ground_truth_counts(gt: GroundTruth) -> np.ndarray:
    """Non-crowd ground-truth boxes per category, int64 [K] in file order (label order)."""
    ids = gt.file_category_ids
    order = np.argsort(ids, kind="stable")
    ann_ids = np.asarray(
        [a["category_id"] for a in gt.dataset["annotations"] if not a.get("iscrowd", 0)],
        dtype=np.int64,
    )
    counts_sorted = np.bincount(np.searchsorted(ids[order], ann_ids), minlength=ids.size).astype(
        np.int64
    )
    counts = np.empty_like(counts_sorted)
    counts[order] = counts_sorted
    return counts


@dataclass(frozen=True, eq=False)
class PerClassResult:
    """Per-category numbers, in the ground truth's category order (file order = label order).

    Attributes:
        category_ids: int64 [K], COCO category ids.
        names: K category names.
        metrics: float64 [K, 7], columns METRIC_NAMES; -1 where COCO gives -1.
        gt_counts: int64 [K], non-crowd ground-truth boxes.
        detection_counts: int64 [K], detections scored (all scores).
        recall_thresholds: float64 [R] (R = 101: 0.00, 0.01, ..., 1.00).
        precision50: float64 [K, R], interpolated precision at IoU 0.50 (100 detections, all
            areas); a row of -1 for a category without ground truth.
        precision_mean: float64 [K, R], the same averaged over IoU 0.50:0.95.
        confusion: the confusion matrix, when it was asked for.
    """

    category_ids: np.ndarray
    names: tuple[str, ...]
    metrics: np.ndarray
    gt_counts: np.ndarray
    detection_counts: np.ndarray
    recall_thresholds: np.ndarray
    precision50: np.ndarray
    precision_mean: np.ndarray
    confusion: ConfusionMatrix | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PerClassResult):
            return NotImplemented
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if isinstance(mine, np.ndarray):
                if not np.array_equal(mine, theirs):
                    return False
            elif mine != theirs:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per category: category_id, name, the 7 METRIC_NAMES, gt, detections."""
        out = []
        for k, (cat_id, name) in enumerate(
            zip(self.category_ids.tolist(), self.names, strict=True)
        ):
            record: dict[str, Any] = {"category_id": int(cat_id), "name": name}
            record.update(zip(METRIC_NAMES, (float(v) for v in self.metrics[k]), strict=True))
            record["gt"] = int(self.gt_counts[k])
            record["detections"] = int(self.detection_counts[k])
            out.append(record)
        return out

    def unique_names(self) -> list[str]:
        """Names made unique: a repeated name gets its category id ("name#id")."""
        seen: dict[str, int] = {}
        for name in self.names:
            seen[name] = seen.get(name, 0) + 1
        return [
            name if seen[name] == 1 else f"{name}#{cat_id}"
            for name, cat_id in zip(self.names, self.category_ids.tolist(), strict=True)
        ]

    def ap_by_name(self) -> dict[str, float]:
        """{category name: AP @[.50:.95]} (-1: no ground truth), for metrics.jsonl and wandb."""
        return dict(zip(self.unique_names(), (float(v) for v in self.metrics[:, 0]), strict=True))


def per_class_from_accumulated(
    evaluation: dict[str, Any],
    params: Any,
    gt: GroundTruth,
    detection_category_ids: np.ndarray,
    *,
    gt_counts: np.ndarray | None = None,
    confusion: ConfusionMatrix | None = None,
) -> PerClassResult:
    """PerClassResult from a COCOeval after accumulate() (faster-coco-eval or pycocotools).

    Args:
        evaluation: COCOeval.eval, with "precision" [T, R, K, A, M] and "recall" [T, K, A, M].
        params: COCOeval.params (iouThrs, recThrs, catIds sorted, areaRngLbl, maxDets).
        gt: the ground truth scored against.
        detection_category_ids: int64 or float64 [R_det], category id of every detection scored.
        gt_counts: int64 [K] non-crowd boxes per category (computed when None).
        confusion: attached as is.
    """
    precision = np.asarray(evaluation["precision"], dtype=np.float64)
    recall = np.asarray(evaluation["recall"], dtype=np.float64)
    iou_thrs = np.asarray(params.iouThrs, dtype=np.float64)
    t50 = int(np.flatnonzero(np.isclose(iou_thrs, 0.5))[0])
    t75 = int(np.flatnonzero(np.isclose(iou_thrs, 0.75))[0])
    areas = list(params.areaRngLbl)
    m100 = list(params.maxDets).index(100)
    p = precision[..., m100]  # [T, R, K, A]
    all_area = areas.index("all")
    columns = [
        _masked_mean(p[:, :, :, all_area], (0, 1)),
        _masked_mean(p[t50, :, :, all_area], (0,)),
        _masked_mean(p[t75, :, :, all_area], (0,)),
        *(_masked_mean(p[:, :, :, areas.index(a)], (0, 1)) for a in ("small", "medium", "large")),
        _masked_mean(recall[:, :, all_area, m100], (0,)),
    ]
    sorted_ids = np.asarray(params.catIds, dtype=np.int64)
    file_ids = gt.file_category_ids
    position = np.searchsorted(sorted_ids, file_ids)  # sorted index of each category, file order
    metrics = np.stack(columns, axis=1)[position]
    curve = p[:, :, :, all_area][:, :, position]  # [T, R, K]
    has_gt = (curve > -1).any(axis=(0, 1))
    precision_mean = np.where(has_gt[:, None], curve.mean(axis=0).T, MISSING)
    det_ids = np.asarray(detection_category_ids).astype(np.int64)
    det_counts = np.bincount(np.searchsorted(sorted_ids, det_ids), minlength=sorted_ids.size)
    return PerClassResult(
        category_ids=file_ids.copy(),
        names=tuple(category_names(gt)),
        metrics=metrics,
        gt_counts=ground_truth_counts(gt) if gt_counts is None else gt_counts,
        detection_counts=det_counts[position].astype(np.int64),
        recall_thresholds=np.asarray(params.recThrs, dtype=np.float64),
        precision50=curve[t50].T.copy(),
        precision_mean=precision_mean,
        confusion=confusion,
    )
