"""All 12 stats of ssd_eval's scorer equal pycocotools' to 1e-9 on varied generated sets."""

from __future__ import annotations

import numpy as np
import pytest
from ssd_eval.groundtruth import load_ground_truth
from ssd_eval.scoring import CocoScorer
from ssd_eval.synthetic import make_detections, make_ground_truth

from tests.helpers.coco_reference import pycocotools_stats, records_from_rows

SETS = {
    # name: (ground-truth options, detection options)
    "crowd_and_areas": (
        {"num_images": 120, "seed": 1, "crowd_fraction": 0.08},
        {"seed": 1, "per_image": 40},
    ),
    "absent_categories_no_detections": (
        {"num_images": 120, "seed": 2, "absent_categories": 20, "empty_fraction": 0.1},
        {"seed": 2, "per_image": 30, "no_detection_fraction": 0.25},
    ),
    "duplicates_unsorted_categories": (
        {"num_images": 100, "seed": 3, "shuffle_categories": True, "num_categories": 12},
        {"seed": 3, "per_image": 25, "duplicate_fraction": 0.2},
    ),
    "more_than_100_per_image": (
        {"num_images": 25, "seed": 4, "num_categories": 3, "mean_boxes": 15},
        {"seed": 4, "per_image": 150, "wrong_class_fraction": 0.3},
    ),
}


@pytest.mark.parametrize("name", list(SETS))
def test_twelve_stats_equal_pycocotools(name: str) -> None:
    gt_options, det_options = SETS[name]
    gt = make_ground_truth(**gt_options)
    rows = make_detections(gt, **det_options)

    expected = pycocotools_stats(gt, records_from_rows(rows))
    ours = CocoScorer(load_ground_truth(gt), backend="faster").score(rows)

    assert len(ours.stats) == 12
    np.testing.assert_allclose(ours.stats, expected, rtol=0, atol=1e-9)
    assert ours.map == ours.stats[0]
    assert 0.0 < ours.map < 1.0  # a non-trivial score, so agreement is meaningful


def test_sets_cover_the_required_cases() -> None:
    """The generated sets really contain what the agreement test claims to cover."""
    gt = make_ground_truth(**SETS["crowd_and_areas"][0])
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (
        (areas < 32**2).any()
        and ((areas >= 32**2) & (areas < 96**2)).any()
        and (areas >= 96**2).any()
    )
    assert any(a["iscrowd"] for a in gt["annotations"])

    gt, det = SETS["absent_categories_no_detections"]
    gt = make_ground_truth(**gt)
    rows = make_detections(gt, **det)
    used = {a["category_id"] for a in gt["annotations"]}
    listed = [c["id"] for c in gt["categories"]]
    absent = set(listed) - used
    assert absent and np.isin(rows[:, 6], sorted(absent)).any()  # detections of absent categories
    assert {im["id"] for im in gt["images"]} - set(rows[:, 0].astype(int).tolist())

    gt, det = SETS["duplicates_unsorted_categories"]
    gt = make_ground_truth(**gt)
    rows = make_detections(gt, **det)
    ids = [c["id"] for c in gt["categories"]]
    assert ids != sorted(ids)
    assert np.unique(rows, axis=0).shape[0] < rows.shape[0]  # exact duplicates exist


def test_pycocotools_backend_matches_reference() -> None:
    gt = make_ground_truth(40, seed=5)
    rows = make_detections(gt, seed=5, per_image=20)
    ours = CocoScorer(load_ground_truth(gt), backend="pycocotools").score(rows)
    np.testing.assert_allclose(
        ours.stats, pycocotools_stats(gt, records_from_rows(rows)), atol=1e-12
    )
