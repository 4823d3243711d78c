"""ssd_core: the MLPerf SSD300-ResNet34 model, default boxes, matching/box coding, loss, post-processing.

Pure tensor code (no I/O beyond reading backbone weights, no torch.distributed). Modules:
``anchors``, ``preprocess``, ``backbone``, ``model``, ``box_coder``, ``loss``, ``postprocess``,
``config``, ``build``.
"""
