"""ssd_data: COCO reading, the MLPerf SSD augmentation, torchdata.nodes input pipelines, the
synthetic COCO-format dataset and the COCO downloader.

The public names below are importable from the package itself (``from ssd_data import
build_train_loader``); they load lazily, so importing ``ssd_data.config`` alone stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnnotationError": "ssd_data.errors",
    "BadImageError": "ssd_data.errors",
    "CocoIndex": "ssd_data.coco",
    "DataConfig": "ssd_data.config",
    "DataError": "ssd_data.errors",
    "EvalBatch": "ssd_data.samples.batch",
    "EvalLoader": "ssd_data.pipeline",
    "LabelMapError": "ssd_data.labels",
    "TrainBatch": "ssd_data.samples.batch",
    "TrainLoader": "ssd_data.pipeline",
    "build_eval_loader": "ssd_data.pipeline",
    "build_train_loader": "ssd_data.pipeline",
    "check_annotation_files": "ssd_data.pipeline",
    "check_dataset_paths": "ssd_data.errors",
    "download_backbone": "ssd_data.download",
    "download_coco": "ssd_data.download",
    "generate_synthetic_coco": "ssd_data.synthetic.generate",
    "label_map": "ssd_data.labels",
    "label_to_category_id": "ssd_data.labels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssd_data' has no attribute {name!r}")
