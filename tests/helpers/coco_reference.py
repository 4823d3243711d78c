"""COCO scoring references shared by the tests and their subprocess workers.

Everything here is written independently of ssd_eval's conversion code: the pycocotools
reference, rows -> COCO results, and detections -> padded tensor batches (plus the COCO records
those tensors stand for, computed with plain Python floats).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import torch


def pycocotools_stats(gt: dict[str, Any], records: list[dict[str, Any]]) -> list[float]:
    """The 12 COCOeval bbox stats computed by plain pycocotools (the reference)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(records))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def records_from_rows(rows: np.ndarray) -> list[dict[str, Any]]:
    """Rows [R, 7] (image_id, x, y, w, h, score, category_id) -> COCO results list."""
    return [
        {
            "image_id": int(r[0]),
            "bbox": [r[1], r[2], r[3], r[4]],
            "score": r[5],
            "category_id": int(r[6]),
        }
        for r in rows.tolist()
    ]


def file_order_labels(gt: dict[str, Any]) -> list[int]:
    """The label map of ``gt`` written out (interfaces.md "Label map"): entry i is the category id
    of the i-th entry of gt['categories'] in file order; entry 0 (background) is 0."""
    return [0, *(category["id"] for category in gt["categories"])]


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def tensor_batches(
    gt: dict[str, Any], rows: np.ndarray, batch_size: int, image_ids: list[int] | None = None
) -> tuple[list[Batch], list[dict[str, Any]]]:
    """Detections of `image_ids` (default: every gt image) as padded tensor batches.

    Returns (batches of (image_ids int64 [N], boxes float32 [N, K, 4] normalised ltrb,
    scores float32 [N, K], labels int64 [N, K], counts int64 [N]), the COCO records those
    tensors represent). Labels follow the file order of gt['categories'] (1-based); padding
    slots hold garbage that must be ignored (they lie beyond counts).
    """
    label_of = {}
    for position, category in enumerate(gt["categories"]):
        label_of[category["id"]] = position + 1
    size_of = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    wanted = [im["id"] for im in gt["images"]] if image_ids is None else list(image_ids)
    per_image: dict[int, list[list[float]]] = {i: [] for i in wanted}
    for row in rows.tolist():
        if int(row[0]) in per_image:
            per_image[int(row[0])].append(row)
    k = max([len(v) for v in per_image.values()] + [1])
    batches: list[Batch] = []
    records: list[dict[str, Any]] = []
    for start in range(0, len(wanted), batch_size):
        chunk = wanted[start : start + batch_size]
        n = len(chunk)
        boxes = torch.full((n, k, 4), 0.5, dtype=torch.float32)  # padding: plausible garbage
        scores = torch.full((n, k), 0.99, dtype=torch.float32)
        labels = torch.ones((n, k), dtype=torch.int64)
        counts = torch.zeros(n, dtype=torch.int64)
        for i, image_id in enumerate(chunk):
            height, width = size_of[image_id]
            dets = per_image[image_id]
            counts[i] = len(dets)
            for j, (_, x, y, w, h, score, category_id) in enumerate(dets):
                boxes[i, j] = torch.tensor(
                    [x / width, y / height, (x + w) / width, (y + h) / height]
                )
                scores[i, j] = score
                labels[i, j] = label_of[int(category_id)]
                # The record the float32 tensors stand for (pixels = normalised * size).
                left, top, right, bottom = (float(v) for v in boxes[i, j])
                records.append(
                    {
                        "image_id": image_id,
                        "bbox": [
                            left * width,
                            top * height,
                            (right - left) * width,
                            (bottom - top) * height,
                        ],
                        "score": float(scores[i, j]),
                        "category_id": int(category_id),
                    }
                )
        batches.append((torch.tensor(chunk, dtype=torch.int64), boxes, scores, labels, counts))
    return batches, records
