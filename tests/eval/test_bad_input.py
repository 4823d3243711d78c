"""Bad input gets a clear error naming the offending record; an empty result set scores 0."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ssd_eval.config import EvalConfig
from ssd_eval.detections import DetectionsError, load_detections, rows_from_records
from ssd_eval.evaluator import CocoEvaluator, EvaluationError
from ssd_eval.groundtruth import GroundTruthError, load_ground_truth
from ssd_eval.scoring import CocoScorer
from ssd_eval.tensor_detections import TensorDetectionsError

from tests.helpers.coco_reference import file_order_labels


def _score_records(gt: dict, records: object) -> list[float]:
    return CocoScorer(load_ground_truth(gt)).score(rows_from_records(records)).stats


GOOD = {"image_id": 10, "category_id": 7, "bbox": [20.0, 10.0, 40.0, 30.0], "score": 0.9}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {**GOOD, "image_id": 999},
            r"record 1 = .*'image_id': 999.*'image_id' is not in the ground truth",
        ),
        (
            {**GOOD, "category_id": 4},
            r"record 1 = .*'category_id': 4.*'category_id' is not in the ground truth",
        ),
        ({**GOOD, "bbox": [1.0, 2.0, math.nan, 3.0]}, r"record 1 = .*nan.*not finite"),
        ({**GOOD, "score": math.inf}, r"record 1 = .*inf.*not finite"),
        ({**GOOD, "bbox": [1.0, 2.0, -3.0, 4.0]}, r"record 1 = .*-3\.0.*negative width or height"),
        ({**GOOD, "bbox": [1.0, 2.0, 3.0]}, r"record 1 = .*'bbox' must be a list of 4 numbers"),
        ({k: v for k, v in GOOD.items() if k != "score"}, r"record 1 = .*'score' must be a number"),
        ({**GOOD, "score": "high"}, r"record 1 = .*'score' must be a number"),
        ({**GOOD, "image_id": "10"}, r"record 1 = .*must be integers"),
        ([10, 7, 1, 2, 3, 4, 0.5], r"record 1 = \[10, 7.*is not an object"),
    ],
)
def test_bad_detection_record_is_named(tiny_gt: dict, bad: object, message: str) -> None:
    with pytest.raises(DetectionsError, match=message):
        _score_records(tiny_gt, [GOOD, bad])


def test_detections_json_must_be_a_list(tmp_path: Path) -> None:
    path = tmp_path / "dets.json"
    path.write_text(json.dumps({"annotations": [GOOD]}))
    with pytest.raises(
        DetectionsError, match=r"dets\.json: a COCO results file must hold a JSON list"
    ):
        load_detections(path)
    path.write_text("[{")
    with pytest.raises(DetectionsError, match=r"dets\.json: not valid JSON"):
        load_detections(path)
    with pytest.raises(DetectionsError, match="not found"):
        load_detections(tmp_path / "missing.json")


def test_empty_detection_list_scores_zero(tiny_gt: dict) -> None:
    # pycocotools' own loadRes crashes on []; by COCO's definitions precision and recall are 0
    # wherever ground truth exists (small and medium here) and -1 where none does (large).
    expected = [0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    assert _score_records(tiny_gt, []) == expected
    scorer = CocoScorer(load_ground_truth(tiny_gt), backend="pycocotools")
    assert scorer.score(np.zeros((0, 7))).stats == expected


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda gt: gt.pop("categories"), r"missing 'categories'"),
        (lambda gt: gt["images"][1].update(width=0), r"images\[1\] \(id 20\).*positive integers"),
        (
            lambda gt: gt["images"].append({"id": 10, "height": 5, "width": 5}),
            r"images\[2\] repeats image id 10",
        ),
        (
            lambda gt: gt["annotations"][1].update(category_id=8),
            r"annotations\[1\] = .*'category_id' is not listed",
        ),
        (
            lambda gt: gt["annotations"][0].update(image_id=3),
            r"annotations\[0\] = .*'image_id' is not listed",
        ),
        (
            lambda gt: gt["annotations"][0].pop("area"),
            r"annotations\[0\] = .*'area' must be a finite number",
        ),
        (
            lambda gt: gt["annotations"][1].update(bbox=[1, 2, 3]),
            r"annotations\[1\] = .*'bbox' must be 4",
        ),
        (
            lambda gt: gt["categories"].append({"id": 7}),
            r"categories\[2\] = .* repeats the id of categories\[0\]",
        ),
    ],
)
def test_bad_ground_truth_is_named(tiny_gt: dict, tmp_path: Path, edit, message: str) -> None:
    edit(tiny_gt)
    path = tmp_path / "instances_bad.json"
    path.write_text(json.dumps(tiny_gt))
    with pytest.raises(GroundTruthError, match=r"instances_bad\.json: " + message):
        load_ground_truth(path)


def test_ground_truth_file_problems(tmp_path: Path) -> None:
    with pytest.raises(GroundTruthError, match="not found"):
        load_ground_truth(tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(GroundTruthError, match="top level must be a JSON object"):
        load_ground_truth(tmp_path / "list.json")


def _one_image_batch(**override: torch.Tensor) -> dict[str, torch.Tensor]:
    batch = {
        "image_ids": torch.tensor([10]),
        "boxes": torch.tensor([[[0.1, 0.1, 0.3, 0.4], [0.2, 0.2, 0.4, 0.5]]]),
        "scores": torch.tensor([[0.9, 0.8]]),
        "labels": torch.tensor([[1, 2]]),
        "counts": torch.tensor([2]),
    }
    batch.update(override)
    return batch


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"labels": torch.tensor([[1, 3]])},
            r"detection 1: .*label=3\.0: label is outside 1\.\.C-1 \(C = 3",
        ),
        ({"labels": torch.tensor([[0, 1]])}, r"detection 0: .*label=0\.0: label is outside"),
        (
            {"image_ids": torch.tensor([11])},
            r"image_id=11\), detection 0: .*image_id is not in the ground truth",
        ),
        (
            {"boxes": torch.tensor([[[0.1, 0.1, 0.3, 0.4], [0.2, float("nan"), 0.4, 0.5]]])},
            r"detection 1: .*nan.*not finite",
        ),
        ({"scores": torch.tensor([[0.9, float("inf")]])}, r"detection 1: .*score=inf.*not finite"),
        (
            {"boxes": torch.tensor([[[0.1, 0.1, 0.3, 0.4], [0.4, 0.2, 0.2, 0.5]]])},
            r"detection 1: .*negative size",
        ),
        ({"counts": torch.tensor([3])}, r"\(image_id=10\): count 3 is outside 0\.\.K=2"),
    ],
)
def test_bad_tensor_values_are_named(tiny_gt: dict, override: dict, message: str) -> None:
    evaluator = CocoEvaluator(
        tiny_gt, EvalConfig(asynchronous=False), label_to_category_id=file_order_labels(tiny_gt)
    )
    evaluator.add(**_one_image_batch(**override))
    with pytest.raises(EvaluationError, match=r"invalid detections: rank 0, image #0 .*" + message):
        evaluator.evaluate()


def test_values_beyond_counts_are_ignored(tiny_gt: dict) -> None:
    """Padding slots (>= count) may hold anything, even NaN and out-of-range labels."""
    evaluator = CocoEvaluator(
        tiny_gt, EvalConfig(asynchronous=False), label_to_category_id=file_order_labels(tiny_gt)
    )
    evaluator.add(
        **_one_image_batch(
            boxes=torch.tensor([[[0.1, 0.1, 0.3, 0.4], [float("nan")] * 4]]),
            labels=torch.tensor([[1, 99]]),
            counts=torch.tensor([1]),
        )
    )
    assert evaluator.gather().shape == (1, 7)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"boxes": torch.zeros(1, 2, 3)}, r"boxes must be \[N=1, K, 4\]"),
        ({"scores": torch.zeros(1, 3)}, r"scores must be \[N=1, K=2\]"),
        ({"labels": torch.ones(2, 2, dtype=torch.int64)}, r"labels must be \[N=1, K=2\]"),
        ({"counts": torch.tensor([[2]])}, r"counts must be \[N=1\]"),
        ({"image_ids": torch.tensor([[10]])}, r"image_ids must be \[N\]"),
        ({"labels": torch.tensor([[1.0, 2.0]])}, r"labels must be an integer tensor"),
        (
            {"boxes": torch.ones(1, 2, 4, dtype=torch.int64)},
            r"boxes and scores must be floating point",
        ),
    ],
)
def test_bad_tensor_shapes_fail_at_add(tiny_gt: dict, override: dict, message: str) -> None:
    evaluator = CocoEvaluator(
        tiny_gt, EvalConfig(asynchronous=False), label_to_category_id=file_order_labels(tiny_gt)
    )
    with pytest.raises(TensorDetectionsError, match=message):
        evaluator.add(**_one_image_batch(**override))
