"""Per-category results equal an independent computation: pycocotools' accumulated arrays,
averaged as detectron2's per-category table does (mean of the entries > -1), to 1e-9."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import pytest
from ssd_eval import CocoEvaluator, EvalConfig
from ssd_eval.detections import rows_from_records
from ssd_eval.groundtruth import load_ground_truth
from ssd_eval.per_class import METRIC_NAMES
from ssd_eval.scoring import CocoScorer
from ssd_eval.synthetic import make_detections, make_ground_truth

from tests.helpers.coco_reference import file_order_labels, records_from_rows, tensor_batches

SETS = {
    # name: (ground-truth options, detection options); COCO's 80 gapped ids unless fewer asked
    "crowd_regions": (
        {"num_images": 120, "seed": 11, "crowd_fraction": 0.1, "num_categories": 20},
        {"seed": 11, "per_image": 40},
    ),
    "empty_and_unsorted_categories": (
        {
            "num_images": 150,
            "seed": 12,
            "absent_categories": 15,
            "shuffle_categories": True,
            "crowd_fraction": 0.05,
            "empty_fraction": 0.1,
        },
        {"seed": 12, "per_image": 30, "no_detection_fraction": 0.2},
    ),
    "more_than_100_per_image": (
        {"num_images": 30, "seed": 13, "num_categories": 5, "mean_boxes": 12},
        {"seed": 13, "per_image": 150, "wrong_class_fraction": 0.3},
    ),
}


def _detectron2_mean(values: np.ndarray) -> float:
    """detectron2's per-category number: mean of the entries > -1 (here -1 when none)."""
    kept = values[values > -1]
    return float(np.mean(kept)) if kept.size else -1.0


def _reference(gt: dict[str, Any], rows: np.ndarray) -> dict[int, dict[str, Any]]:
    """{category id: expected record} from plain pycocotools' eval arrays."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(records_from_rows(rows))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    names = {c["id"]: c["name"] for c in gt["categories"]}
    expected = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        expected[cat_id] = {
            "category_id": cat_id,
            "name": names[cat_id],
            "ap": _detectron2_mean(precision[:, :, k, 0, -1]),
            "ap50": _detectron2_mean(precision[0, :, k, 0, -1]),
            "ap75": _detectron2_mean(precision[5, :, k, 0, -1]),
            "ap_small": _detectron2_mean(precision[:, :, k, 1, -1]),
            "ap_medium": _detectron2_mean(precision[:, :, k, 2, -1]),
            "ap_large": _detectron2_mean(precision[:, :, k, 3, -1]),
            "ar100": _detectron2_mean(recall[:, k, 0, -1]),
            "gt": sum(
                1 for a in gt["annotations"] if a["category_id"] == cat_id and not a["iscrowd"]
            ),
            "detections": int((rows[:, 6] == cat_id).sum()),
            "pr50": precision[0, :, k, 0, -1],
        }
    return expected


def _case(name: str) -> tuple[dict[str, Any], np.ndarray]:
    gt_options, det_options = SETS[name]
    gt = make_ground_truth(**gt_options)
    rows = make_detections(gt, **det_options)
    # one category that has ground truth gets no detection at all: AP 0, not -1
    present = sorted({a["category_id"] for a in gt["annotations"]})
    return gt, rows[rows[:, 6] != present[0]]


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
@pytest.mark.parametrize("name", list(SETS))
def test_per_class_equals_pycocotools_arrays(name: str, backend: str) -> None:
    gt, rows = _case(name)
    expected = _reference(gt, rows)
    result = CocoScorer(load_ground_truth(gt), backend=backend).score(rows)  # type: ignore[arg-type]
    assert result.per_class is not None
    records = result.per_class.records()

    # one record per category, in the json's category order (file order = label order)
    assert [r["category_id"] for r in records] == [c["id"] for c in gt["categories"]]
    for record in records:
        want = expected[record["category_id"]]
        assert record["name"] == want["name"]
        assert (record["gt"], record["detections"]) == (want["gt"], want["detections"])
        for key in METRIC_NAMES:
            assert record[key] == pytest.approx(want[key], abs=1e-9), (record["name"], key)
    k = [c["id"] for c in gt["categories"]]
    for i, cat_id in enumerate(k):  # the PR curve at IoU 0.5 is pycocotools' array itself
        np.testing.assert_allclose(
            result.per_class.precision50[i], expected[cat_id]["pr50"], rtol=0, atol=1e-12
        )
    # COCO's AP is the mean of the per-category APs of the categories with ground truth
    aps = [r["ap"] for r in records if r["ap"] > -1]
    assert np.mean(aps) == pytest.approx(result.map, abs=1e-12)


def test_cases_cover_what_they_claim() -> None:
    """Crowd regions, categories without ground truth (-1), categories with ground truth but no
    detections (0), missing area ranges (-1 beside a real AP), unsorted and gapped ids."""
    for name in SETS:
        gt, rows = _case(name)
        records = CocoScorer(load_ground_truth(gt)).score(rows).per_class.records()  # type: ignore[union-attr]
        assert any(r["gt"] > 0 and r["detections"] == 0 and r["ap"] == 0.0 for r in records)
    gt, rows = _case("empty_and_unsorted_categories")
    records = CocoScorer(load_ground_truth(gt)).score(rows).per_class.records()  # type: ignore[union-attr]
    ids = [c["id"] for c in gt["categories"]]
    assert ids != sorted(ids) and max(ids) > len(ids)
    assert any(a["iscrowd"] for a in gt["annotations"])
    empty = [r for r in records if r["gt"] == 0]
    assert len(empty) == 15 and all(r[k] == -1.0 for r in empty for k in METRIC_NAMES)
    assert all(r["detections"] > 0 for r in empty)  # detections of a class without ground truth
    small_case = make_ground_truth(num_images=6, seed=5, num_categories=30)
    small = CocoScorer(load_ground_truth(small_case)).score(make_detections(small_case, seed=5))
    assert any(
        r["ap"] > -1 and -1.0 in (r["ap_small"], r["ap_medium"], r["ap_large"])
        for r in small.per_class.records()  # type: ignore[union-attr]
    )


def test_per_class_off_leaves_the_twelve_numbers() -> None:
    gt, rows = _case("crowd_regions")
    with_it = CocoScorer(load_ground_truth(gt)).score(rows)
    without = CocoScorer(load_ground_truth(gt), per_class=False).score(rows)
    assert without.per_class is None and with_it.per_class is not None
    assert with_it.stats == without.stats


@pytest.mark.parametrize("asynchronous", [False, True])
def test_evaluator_keeps_per_class_on_rank_zero(asynchronous: bool) -> None:
    """CocoEvaluator's result (one process = rank 0) carries the same per-class results as the
    scorer, whether scored here or in the scoring process."""
    gt, rows = _case("crowd_regions")
    batches, records = tensor_batches(gt, rows, batch_size=16)
    direct = CocoScorer(load_ground_truth(gt)).score(rows_from_records(records))
    config = EvalConfig(asynchronous=asynchronous)
    labels = file_order_labels(gt)
    with CocoEvaluator(gt, config, label_to_category_id=labels) as evaluator:
        for batch in batches:
            evaluator.add(*batch)
        result = evaluator.evaluate(epoch=3)
        if asynchronous:
            assert result is None
            (result,) = evaluator.poll(wait=True)
    assert result is not None and result.per_class is not None
    assert result.epoch == 3
    np.testing.assert_allclose(result.per_class.metrics, direct.per_class.metrics, atol=1e-9)  # type: ignore[union-attr]
    assert result.per_class.confusion is not None
