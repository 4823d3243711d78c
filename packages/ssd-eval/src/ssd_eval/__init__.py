"""ssd_eval: exact, fast, distributed and asynchronous COCO box evaluation (faster-coco-eval).

Import the pieces from their modules (`ssd_eval.evaluator.CocoEvaluator`,
`ssd_eval.async_scoring.AsyncScorer`, ...); this file stays light so that the scoring worker
process does not import torch.
"""

__all__: list[str] = []
