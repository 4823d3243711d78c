"""The caller's label map checked against the ground truth, the ground truth's lookup arrays, and
EvalConfig. (The label map's rule itself lives in ssd_data: tests/train/test_label_map_agreement.py
feeds one json to ssd_data, ssd_eval and ssd-predict.)"""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
from ssd_eval.config import EvalConfig
from ssd_eval.evaluator import CocoEvaluator
from ssd_eval.groundtruth import GroundTruthError, check_label_map, load_ground_truth


def test_ground_truth_lookup_arrays(tiny_gt: dict) -> None:
    gt = load_ground_truth(tiny_gt)
    np.testing.assert_array_equal(gt.image_ids, [10, 20])
    np.testing.assert_array_equal(gt.heights, [100, 50])
    np.testing.assert_array_equal(gt.widths, [200, 50])
    assert gt.category_ids == [3, 7]


def test_the_label_map_comes_from_the_caller(tiny_gt: dict) -> None:
    """Any order the caller gives is used as given (ssd_eval derives no map of its own)."""
    evaluator = CocoEvaluator(
        tiny_gt, EvalConfig(asynchronous=False), label_to_category_id=[0, 3, 7]
    )
    assert evaluator.num_classes == 3
    np.testing.assert_array_equal(evaluator.label_to_category_id, [0, 3, 7])
    assert evaluator.label_to_category_id.dtype == np.int64


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 7, 4], r"does not fit 'categories' \[3, 7\] \(ids \[4\] are not listed\)"),
        ([0, 7, 7], r"an id repeats"),
        ([0], r"must be integers \[C >= 2\]"),
        ([[0, 7, 3]], r"must be integers \[C >= 2\]"),
        ([0.0, 7.0, 3.0], r"must be integers \[C >= 2\]"),
    ],
)
def test_a_label_map_that_does_not_fit_is_named(tiny_gt: dict, labels: list, message: str) -> None:
    with pytest.raises(GroundTruthError, match=r"<dict>: .*" + message):
        check_label_map(load_ground_truth(tiny_gt), labels)


def test_eval_config_defaults_and_validation() -> None:
    cfg = EvalConfig()
    assert cfg.asynchronous is True and cfg.backend == "faster" and cfg.start_method == "spawn"
    assert EvalConfig.model_validate({"asynchronous": False}).asynchronous is False
    with pytest.raises(pydantic.ValidationError):
        EvalConfig(start_method="fork")
    with pytest.raises(pydantic.ValidationError):
        EvalConfig(max_pending=0)
    with pytest.raises(pydantic.ValidationError):
        EvalConfig(epochs=[40])  # the schedule belongs to the trainer


def test_package_exports_load_lazily_without_torch() -> None:
    import subprocess
    import sys

    import ssd_eval
    from ssd_eval.evaluator import CocoEvaluator

    assert ssd_eval.CocoEvaluator is CocoEvaluator
    # The scoring worker imports these; they must not pull in torch.
    code = "import sys, ssd_eval, ssd_eval.async_scoring, ssd_eval.cli; assert 'torch' not in sys.modules"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
