"""ssd_eval: exact, fast, distributed and asynchronous COCO box evaluation (faster-coco-eval).

The main names are importable from here (`ssd_eval.CocoEvaluator`, ...) but load lazily, so that
importing the package (as the scoring worker process does) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AsyncScorer": "ssd_eval.async_scoring",
    "CocoEvaluator": "ssd_eval.evaluator",
    "CocoScorer": "ssd_eval.scoring",
    "ConfusionMatrix": "ssd_eval.confusion",
    "EvalConfig": "ssd_eval.config",
    "EvalResult": "ssd_eval.result",
    "EvaluationError": "ssd_eval.evaluator",
    "GroundTruth": "ssd_eval.groundtruth",
    "GroundTruthError": "ssd_eval.groundtruth",
    "PerClassResult": "ssd_eval.per_class",
    "confusion_matrix": "ssd_eval.confusion",
    "format_per_class_table": "ssd_eval.per_class_table",
    "format_summary": "ssd_eval.summary",
    "check_label_map": "ssd_eval.groundtruth",
    "load_ground_truth": "ssd_eval.groundtruth",
    "read_json": "ssd_eval.groundtruth",
    "write_plots": "ssd_eval.per_class_plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssd_eval' has no attribute {name!r}")
