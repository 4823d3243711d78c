"""CocoEvaluator's tensor path: conversion to COCO form, label map in file order, exact stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ssd_eval.config import EvalConfig
from ssd_eval.evaluator import CocoEvaluator, EvaluationError
from ssd_eval.synthetic import make_detections, make_ground_truth

from tests.helpers.coco_reference import file_order_labels, pycocotools_stats, tensor_batches

SYNC = EvalConfig(asynchronous=False)


def test_conversion_to_pixels_and_category_ids(tiny_gt: dict) -> None:
    evaluator = CocoEvaluator(tiny_gt, SYNC, label_to_category_id=file_order_labels(tiny_gt))
    boxes = torch.zeros(2, 3, 4)
    boxes[0, 0] = torch.tensor([0.125, 0.25, 0.375, 0.5])  # image 10 is 200 wide, 100 high
    boxes[1, 0] = torch.tensor([0.5, 0.25, 0.75, 1.0])  # image 20 is 50 x 50
    boxes[1, 1] = torch.tensor([0.0, 0.0, 0.5, 0.5])
    scores = torch.tensor([[0.9, 0.0, 0.0], [0.5, 0.25, 0.0]])
    labels = torch.tensor([[2, 0, 0], [1, 2, 0]])  # file order [7, 3]: label 1 -> 7, label 2 -> 3
    evaluator.add(torch.tensor([10, 20]), boxes, scores, labels, torch.tensor([1, 2]))
    rows = evaluator.gather()
    expected = np.array(
        [
            [10, 25.0, 25.0, 50.0, 25.0, 0.9, 3],
            [20, 25.0, 12.5, 12.5, 37.5, 0.5, 7],
            [20, 0.0, 0.0, 25.0, 25.0, 0.25, 3],
        ]
    )
    np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-6)


def test_stats_equal_pycocotools_with_unsorted_categories() -> None:
    gt = make_ground_truth(
        80, seed=11, num_categories=10, shuffle_categories=True, absent_categories=2
    )
    assert [c["id"] for c in gt["categories"]] != sorted(c["id"] for c in gt["categories"])
    rows = make_detections(
        gt, seed=11, per_image=30, no_detection_fraction=0.2, duplicate_fraction=0.05
    )
    batches, records = tensor_batches(gt, rows, batch_size=16)

    evaluator = CocoEvaluator(gt, SYNC, label_to_category_id=file_order_labels(gt))
    for batch in batches:
        evaluator.add(*batch)
    result = evaluator.evaluate(epoch=3)

    assert result is not None and result.epoch == 3
    np.testing.assert_allclose(result.stats, pycocotools_stats(gt, records), rtol=0, atol=1e-9)
    assert result.map == result.stats[0] and result.map > 0.05


def test_batches_with_different_k_and_an_empty_batch(tiny_gt: dict) -> None:
    evaluator = CocoEvaluator(tiny_gt, SYNC, label_to_category_id=file_order_labels(tiny_gt))
    evaluator.add(
        torch.tensor([10]),
        torch.tensor([[[0.1, 0.1, 0.3, 0.4]]]),
        torch.tensor([[0.9]]),
        torch.tensor([[1]]),
        torch.tensor([1]),
    )
    evaluator.add(
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, 5, 4),
        torch.zeros(0, 5),
        torch.zeros(0, 5, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
    )
    evaluator.add(
        torch.tensor([20]),
        torch.tensor([[[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 1.0, 1.0]]]),
        torch.tensor([[0.8, 0.1]]),
        torch.tensor([[2, 2]]),
        torch.tensor([2]),
    )
    rows = evaluator.gather()
    assert rows.shape == (3, 7)
    np.testing.assert_array_equal(rows[:, 0], [10, 20, 20])
    np.testing.assert_array_equal(rows[:, 6], [7, 3, 3])


def test_evaluate_clears_and_reset_forgets(tiny_gt: dict) -> None:
    evaluator = CocoEvaluator(tiny_gt, SYNC, label_to_category_id=file_order_labels(tiny_gt))
    batch = (
        torch.tensor([10]),
        torch.tensor([[[0.1, 0.1, 0.3, 0.4]]]),
        torch.tensor([[0.9]]),
        torch.tensor([[1]]),
        torch.tensor([1]),
    )
    evaluator.add(*batch)
    first = evaluator.evaluate(epoch=1)
    evaluator.add(*batch)  # the same image again after evaluate(): not a duplicate
    second = evaluator.evaluate(epoch=2)
    assert first.stats == second.stats and (first.epoch, second.epoch) == (1, 2)
    evaluator.add(*batch)
    evaluator.reset()
    evaluator.add(*batch)
    assert evaluator.gather().shape == (1, 7)


def test_image_added_twice_is_an_error(tiny_gt: dict) -> None:
    evaluator = CocoEvaluator(tiny_gt, SYNC, label_to_category_id=file_order_labels(tiny_gt))
    batch = (
        torch.tensor([10, 10]),
        torch.zeros(2, 1, 4),
        torch.zeros(2, 1),
        torch.ones(2, 1, dtype=torch.int64),
        torch.zeros(2, dtype=torch.int64),
    )
    evaluator.add(*batch)
    with pytest.raises(EvaluationError, match=r"added more than once.*\[10\]"):
        evaluator.evaluate()


def test_no_detections_at_all_scores_zero(tiny_gt: dict) -> None:
    evaluator = CocoEvaluator(tiny_gt, SYNC, label_to_category_id=file_order_labels(tiny_gt))
    result = evaluator.evaluate(epoch=0)
    # Ground truth: a small box (area 100) and a medium one (1200), none large; without any
    # detection precision and recall are 0 where ground truth exists, -1 (no gt) for large.
    assert result.stats == [0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    assert result.map == 0.0


def test_add_does_not_read_values_on_the_host(
    tiny_gt: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """add() must not sync with the device: every way of reading a tensor value on the host
    fails while it runs (checks happen later, in gather)."""
    evaluator = CocoEvaluator(tiny_gt, SYNC, label_to_category_id=file_order_labels(tiny_gt))
    batch = (
        torch.tensor([10, 20]),
        torch.rand(2, 4, 4).sort(dim=-1).values,
        torch.rand(2, 4),
        torch.ones(2, 4, dtype=torch.int64),
        torch.tensor([4, 2]),
    )

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("host sync in add()")

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    evaluator.add(*batch)
    evaluator.add(*batch)
    monkeypatch.undo()
    with pytest.raises(EvaluationError, match="added more than once"):  # values read at gather
        evaluator.gather()
