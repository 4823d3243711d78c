"""``ssd-predict``: detections on image files with exported weights, and ONNX / torch.export export.

Modules: :mod:`.sources` (image discovery, image ids, class names), :mod:`.predictor` (evaluation
preprocessing -> model -> post-processing -> COCO records and drawn images), :mod:`.export`
(ONNX / ``.pt2``), :mod:`.cli` (the console script).
"""
