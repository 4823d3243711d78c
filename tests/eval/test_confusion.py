"""The confusion matrix: a hand-counted case, and generated sets against a plain per-image loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ssd_eval import confusion as confusion_module
from ssd_eval.confusion import confusion_matrix
from ssd_eval.groundtruth import load_ground_truth
from ssd_eval.synthetic import make_detections, make_ground_truth


def _ann(ann_id: int, image_id: int, cat: int, box: list[float], crowd: int = 0) -> dict[str, Any]:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": box,
        "area": box[2] * box[3],
        "iscrowd": crowd,
    }


def test_hand_counted_case() -> None:
    """Categories listed [9, 4, 7] (labels 1, 2, 3 -> matrix index 0, 1, 2; 3 = background)."""
    gt = {
        "images": [{"id": 1, "height": 100, "width": 100}, {"id": 2, "height": 100, "width": 100}],
        "categories": [
            {"id": 9, "name": "nine"},
            {"id": 4, "name": "four"},
            {"id": 7, "name": "x"},
        ],
        "annotations": [
            _ann(1, 1, 9, [0, 0, 10, 10]),  # found as 9
            _ann(2, 1, 4, [50, 50, 20, 20]),  # found as 7 (confused)
            _ann(3, 1, 7, [80, 0, 10, 10]),  # missed
            _ann(4, 2, 4, [0, 0, 30, 30]),  # two detections: the better one counts
            _ann(5, 2, 9, [60, 60, 40, 40], crowd=1),  # a crowd region
        ],
    }
    rows = np.array(
        [
            # image, x, y, w, h, score, category
            [1, 0, 0, 10, 10, 0.9, 9],  # [nine, nine]
            [1, 51, 51, 20, 20, 0.8, 7],  # [four, x]
            [1, 80, 0, 10, 10, 0.1, 7],  # below the score threshold: not counted
            [1, 30, 30, 5, 5, 0.7, 4],  # nothing there: [background, four]
            [2, 0, 0, 30, 28, 0.6, 4],  # IoU 0.93 with ann 4: [four, four]
            [2, 1, 1, 30, 30, 0.95, 9],  # IoU 0.88 with ann 4, taken by the better pair: FP
            [2, 65, 65, 20, 20, 0.9, 7],  # inside the crowd region: not counted
            [2, 50, 0, 10, 10, 0.5, 7],  # nothing there: [background, x]
        ],
        dtype=np.float64,
    )
    matrix = confusion_matrix(rows, load_ground_truth(gt), score_threshold=0.25)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = 1  # nine -> nine
    expected[1, 2] = 1  # four -> x
    expected[2, 3] = 1  # x missed
    expected[1, 1] = 1  # four -> four
    expected[3, 1] = 1  # false four
    expected[3, 0] = 1  # false nine (second detection of ann 4)
    expected[3, 2] = 1  # false x
    np.testing.assert_array_equal(matrix.counts, expected)
    assert matrix.names == ("nine", "four", "x")
    normalized = matrix.normalized()
    np.testing.assert_allclose(normalized[1], [0.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(normalized[3], [1 / 3, 1 / 3, 1 / 3, 0.0])


def _loop_reference(
    gt: dict[str, Any], rows: np.ndarray, iou_threshold: float, score_threshold: float
) -> np.ndarray:
    """The matching rule written as a plain loop over images and pairs (python floats)."""
    cats = [c["id"] for c in gt["categories"]]
    k = len(cats)
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros((k + 1, k + 1), dtype=np.int64)

    def overlap(a: list[float], b: list[float]) -> tuple[float, float]:
        w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        inter = w * h
        union = a[2] * a[3] + b[2] * b[3] - inter
        return (inter / union if union > 0 else 0.0), (
            inter / (a[2] * a[3]) if a[2] * a[3] > 0 else 0.0
        )

    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        real = [a for a in anns if not a["iscrowd"]]
        crowd = [a for a in anns if a["iscrowd"]]
        dets = [r for r in rows.tolist() if r[0] == image["id"] and r[5] >= score_threshold]
        pairs = []
        for d, det in enumerate(dets):
            for g, ann in enumerate(real):
                iou, _ = overlap(det[1:5], ann["bbox"])
                if iou >= iou_threshold:
                    pairs.append((iou, d, g))
        pairs.sort(key=lambda p: -p[0])  # stable: ties keep (detection, gt) order
        best_of_det, seen = [], set()
        for _iou, d, g in pairs:
            if d not in seen:
                seen.add(d)
                best_of_det.append((d, g))
        matched_d, matched_g = set(), set()
        for d, g in best_of_det:
            if g not in matched_g:
                matched_g.add(g)
                matched_d.add(d)
                counts[index[real[g]["category_id"]], index[int(dets[d][6])]] += 1
        for g, ann in enumerate(real):
            if g not in matched_g:
                counts[index[ann["category_id"]], k] += 1
        for d, det in enumerate(dets):
            if d in matched_d:
                continue
            if any(overlap(det[1:5], c["bbox"])[1] >= iou_threshold for c in crowd):
                continue
            counts[k, index[int(det[6])]] += 1
    return counts


@pytest.mark.parametrize(
    ("gt_options", "det_options", "score_threshold", "max_pairs"),
    [
        (
            {"num_images": 60, "seed": 21, "crowd_fraction": 0.1, "num_categories": 10},
            {},
            0.25,
            None,
        ),
        (
            {"num_images": 50, "seed": 22, "shuffle_categories": True, "absent_categories": 5},
            {"duplicate_fraction": 0.1},
            0.0,
            500,  # many small chunks of pairs
        ),
    ],
)
def test_equals_a_plain_loop(
    gt_options: dict[str, Any],
    det_options: dict[str, Any],
    score_threshold: float,
    max_pairs: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gt = make_ground_truth(**gt_options)
    rows = make_detections(gt, seed=gt_options["seed"], per_image=30, **det_options)
    if max_pairs is not None:
        monkeypatch.setattr(confusion_module, "_MAX_PAIRS", max_pairs)
    ours = confusion_matrix(rows, load_ground_truth(gt), score_threshold=score_threshold)
    expected = _loop_reference(gt, rows, 0.5, score_threshold)
    np.testing.assert_array_equal(ours.counts, expected)
    assert expected[:-1, :-1].trace() > 0 and expected[-1].sum() > 0 and expected[:, -1].sum() > 0
    real = sum(1 for a in gt["annotations"] if not a["iscrowd"])
    assert expected[:-1].sum() == real  # every real ground-truth box is counted exactly once
