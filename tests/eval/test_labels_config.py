"""Label map (file order, not id order) and EvalConfig."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
from ssd_eval.config import EvalConfig
from ssd_eval.groundtruth import load_ground_truth
from ssd_eval.labels import LabelMapError, category_id_to_label, label_to_category_id, num_classes


def test_label_map_follows_file_order() -> None:
    categories = [{"id": 90, "name": "z"}, {"id": 1, "name": "a"}, {"id": 44, "name": "m"}]
    np.testing.assert_array_equal(label_to_category_id(categories), [-1, 90, 1, 44])
    assert category_id_to_label(categories) == {90: 1, 1: 2, 44: 3}
    assert num_classes(categories) == 4


def test_ground_truth_lookup_arrays(tiny_gt: dict) -> None:
    gt = load_ground_truth(tiny_gt)
    np.testing.assert_array_equal(gt.label_to_category_id, [-1, 7, 3])
    np.testing.assert_array_equal(gt.image_ids, [10, 20])
    np.testing.assert_array_equal(gt.heights, [100, 50])
    np.testing.assert_array_equal(gt.widths, [200, 50])
    assert gt.num_classes == 3 and gt.category_ids == [3, 7]


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        ([{"id": 1}, {"id": 1}], r"categories\[1\] .* repeats the id of categories\[0\]"),
        ([{"name": "x"}], r"categories\[0\] .* has no 'id'"),
        ([{"id": "3"}], r"categories\[0\] .*'id' must be an integer"),
    ],
)
def test_bad_categories(categories: list, message: str) -> None:
    with pytest.raises(LabelMapError, match=message):
        label_to_category_id(categories)


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
