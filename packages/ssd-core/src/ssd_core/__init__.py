"""ssd_core: the MLPerf SSD300-ResNet34 model, default boxes, matching/box coding, loss, post-processing.

Pure tensor code (no I/O beyond reading backbone weights, no torch.distributed). Modules:
``anchors``, ``preprocess``, ``backbone``, ``model``, ``box_coder``, ``loss``, ``postprocess``,
``config``, ``build``, ``torch_file``. The public names below are importable from the package itself
(``from ssd_core import SSD300``); they load lazily, so importing ``ssd_core.config`` alone stays
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "COCO_NUM_CLASSES": "ssd_core.config",
    "Detections": "ssd_core.postprocess",
    "Detector": "ssd_core.build",
    "ModelConfig": "ssd_core.config",
    "PostProcessor": "ssd_core.postprocess",
    "SSD300": "ssd_core.model",
    "SSDLoss": "ssd_core.loss",
    "SSDLossOutput": "ssd_core.loss",
    "TorchFileError": "ssd_core.torch_file",
    "build_detector": "ssd_core.build",
    "decode": "ssd_core.box_coder",
    "default_boxes": "ssd_core.anchors",
    "encode": "ssd_core.box_coder",
    "encode_compute_dtype": "ssd_core.build",
    "forward_normalized": "ssd_core.preprocess",
    "load_tensor_file": "ssd_core.torch_file",
    "normalize_images": "ssd_core.preprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssd_core' has no attribute {name!r}")
