"""Detection confusion matrix: which class each ground-truth box was detected as, or missed.

Matching (class-agnostic, per image, vectorised over all images with numpy):

1. keep the detections scoring >= ``score_threshold``;
2. every (detection, non-crowd ground-truth box) pair of the same image gets its IoU; pairs with
   IoU >= ``iou_threshold`` are candidates;
3. candidates sorted by IoU (highest first); each detection keeps its best candidate, then each
   ground-truth box keeps its best remaining one (the one-to-one rule of Ultralytics' matrix);
4. a matched pair counts at [true class, predicted class]; an unmatched ground-truth box at [true
   class, background]; an unmatched detection at [background, predicted class], unless it lies on
   a crowd region (intersection over its own area >= ``iou_threshold``, COCO's crowd rule), where
   it is not counted.

Classes are indexed by contiguous label - 1 (the ground truth's category order); index K (the last)
is background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssd_eval.groundtruth import GroundTruth

_MAX_PAIRS = 2_000_000  # IoU pairs computed at once (bounds memory at ~100 MB)


@dataclass(frozen=True, eq=False)
class GroundTruthBoxes:
    """The ground truth as arrays for matching (built once per ground truth).

    Attributes:
        image: int64 [G], position of the box's image in GroundTruth.image_ids.
        boxes: float64 [G, 4], xywh in pixels.
        label: int64 [G], class index 0..K-1 (label - 1).
        crowd: bool [G].
    """

    image: np.ndarray
    boxes: np.ndarray
    label: np.ndarray
    crowd: np.ndarray

    @classmethod
    def from_ground_truth(cls, gt: GroundTruth) -> GroundTruthBoxes:
        anns = gt.dataset["annotations"]
        file_ids = gt.file_category_ids
        order = np.argsort(file_ids, kind="stable")
        cats = np.asarray([a["category_id"] for a in anns], dtype=np.int64)
        return cls(
            image=np.searchsorted(gt.image_ids, [a["image_id"] for a in anns]).astype(np.int64),
            boxes=np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4),
            label=order[np.searchsorted(file_ids[order], cats)].astype(np.int64),
            crowd=np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        )


@dataclass(frozen=True, eq=False)
class ConfusionMatrix:
    """Counts int64 [K + 1, K + 1]: rows true class, columns predicted class, index K background.

    counts[K, K] is always 0 (nothing is counted as background detected as background).
    """

    counts: np.ndarray
    names: tuple[str, ...]
    iou_threshold: float
    score_threshold: float

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return (
            np.array_equal(self.counts, other.counts)
            and self.names == other.names
            and self.iou_threshold == other.iou_threshold
            and self.score_threshold == other.score_threshold
        )

    __hash__ = None  # type: ignore[assignment]

    def normalized(self) -> np.ndarray:
        """float64 [K + 1, K + 1]: each row divided by its sum (rows without counts stay 0)."""
        totals = self.counts.sum(axis=1, keepdims=True)
        return self.counts / np.maximum(totals, 1)


def _pairs(first: np.ndarray, counts: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each item i, the indices start[i] .. start[i] + counts[i] - 1: (item index [P], index [P])."""
    item = np.repeat(np.arange(first.size), counts)
    offset = np.arange(item.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return first[item], start[item] + offset


def _iou(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, intersection over a's area) of paired xywh boxes a, b float64 [P, 4] -> [P], [P]."""
    left = np.maximum(a[:, 0], b[:, 0])
    top = np.maximum(a[:, 1], b[:, 1])
    right = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    bottom = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = a[:, 2] * a[:, 3]
    union = area_a + b[:, 2] * b[:, 3] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    over_a = np.where(area_a > 0, inter / np.where(area_a > 0, area_a, 1.0), 0.0)
    return iou, over_a


def _candidates(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    num_images: int,
    threshold: float,
    crowd: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(det index, gt index, overlap) of same-image pairs whose overlap >= threshold.

    Overlap is the IoU, or with ``crowd`` the intersection over the detection's area. Pairs are
    made in chunks of detections so that at most about _MAX_PAIRS exist at once.
    """
    gt_order = np.argsort(gt_image, kind="stable")
    per_image = np.bincount(gt_image, minlength=num_images)
    start = np.cumsum(per_image) - per_image
    n_pairs = per_image[det_image]
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    cuts = np.searchsorted(np.cumsum(n_pairs), np.arange(_MAX_PAIRS, n_pairs.sum(), _MAX_PAIRS))
    for chunk in np.split(np.arange(det_image.size), cuts):
        det, slot = _pairs(chunk, n_pairs[chunk], start[det_image[chunk]])
        gt = gt_order[slot]
        iou, over_det = _iou(det_boxes[det], gt_boxes[gt])
        overlap = over_det if crowd else iou
        keep = overlap >= threshold
        found.append((det[keep], gt[keep], overlap[keep]))
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))  # type: ignore[return-value]


def _first_of_each(keys: np.ndarray) -> np.ndarray:
    """bool [P]: True at the first occurrence of each value of ``keys``."""
    _, first = np.unique(keys, return_index=True)
    mask = np.zeros(keys.size, dtype=bool)
    mask[first] = True
    return mask


def confusion_matrix(
    rows: np.ndarray,
    gt: GroundTruth,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
    boxes: GroundTruthBoxes | None = None,
    names: tuple[str, ...] | None = None,
) -> ConfusionMatrix:
    """The confusion matrix of detections ``rows`` float64 [R, 7] (image_id, x, y, w, h, score,
    category_id; checked) against ``gt`` (see the module docstring for the matching rule).

    boxes: GroundTruthBoxes of ``gt`` (built when None). names: K class names for the plot.
    """
    boxes = GroundTruthBoxes.from_ground_truth(gt) if boxes is None else boxes
    file_ids = gt.file_category_ids
    k = int(file_ids.size)
    order = np.argsort(file_ids, kind="stable")
    dets = rows[rows[:, 5] >= score_threshold]
    det_image = np.searchsorted(gt.image_ids, dets[:, 0].astype(np.int64))
    det_label = order[np.searchsorted(file_ids[order], dets[:, 6].astype(np.int64))]
    det_boxes = dets[:, 1:5]
    real = np.flatnonzero(~boxes.crowd)
    num_images = gt.num_images

    det, gt_local, iou = _candidates(
        det_image, det_boxes, boxes.image[real], boxes.boxes[real], num_images, iou_threshold, False
    )
    by_iou = np.argsort(-iou, kind="stable")
    det, gt_local = det[by_iou], gt_local[by_iou]
    best_per_det = _first_of_each(det)
    det, gt_local = det[best_per_det], gt_local[best_per_det]
    best_per_gt = _first_of_each(gt_local)
    det, gt_local = det[best_per_gt], gt_local[best_per_gt]
    matched_gt = real[gt_local]

    counts = np.zeros((k + 1) * (k + 1), dtype=np.int64)
    true_label = boxes.label[matched_gt]
    counts += np.bincount(true_label * (k + 1) + det_label[det], minlength=counts.size)

    missed = np.ones(real.size, dtype=bool)
    missed[gt_local] = False
    counts += np.bincount(boxes.label[real[missed]] * (k + 1) + k, minlength=counts.size)

    unmatched = np.ones(dets.shape[0], dtype=bool)
    unmatched[det] = False
    crowd = np.flatnonzero(boxes.crowd)
    if crowd.size and unmatched.any():
        candidates = np.flatnonzero(unmatched)
        on_crowd, _, _ = _candidates(
            det_image[candidates],
            det_boxes[candidates],
            boxes.image[crowd],
            boxes.boxes[crowd],
            num_images,
            iou_threshold,
            True,
        )
        unmatched[candidates[on_crowd]] = False
    counts += np.bincount(k * (k + 1) + det_label[unmatched], minlength=counts.size)

    if names is None:
        names = tuple(str(c.get("name", c["id"])) for c in gt.dataset["categories"])
    return ConfusionMatrix(
        counts=counts.reshape(k + 1, k + 1),
        names=tuple(names),
        iou_threshold=float(iou_threshold),
        score_threshold=float(score_threshold),
    )
