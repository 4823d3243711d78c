"""Evaluation settings (the `eval` section of the trainer's settings).

Only how to score lives here; when to evaluate (epochs, target mAP) belongs to the trainer's
schedule.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    """How COCO box evaluation runs."""

    model_config = ConfigDict(extra="forbid")

    asynchronous: bool = Field(
        True,
        description="Score on rank 0 in a separate process while training continues "
        "(results arrive through CocoEvaluator.poll); False scores in the training process.",
    )
    backend: Literal["faster", "pycocotools"] = Field(
        "faster",
        description="Scoring library: faster-coco-eval (default) or pycocotools (slower, "
        "dev dependency; for checking agreement).",
    )
    start_method: Literal["spawn", "forkserver"] = Field(
        "spawn",
        description="multiprocessing start method of the scoring process (never fork: the "
        "trainer may hold CUDA state and threads).",
    )
    max_pending: int = Field(
        2,
        ge=1,
        description="Most asynchronous scorings in flight; submitting one more first waits for "
        "the oldest (keeps memory bounded when evaluations come faster than scoring).",
    )
    per_class: bool = Field(
        True,
        description="Also compute per-category AP (the table printed after the 12 COCO numbers "
        "and logged per evaluation), precision-recall curves and the confusion matrix; in the "
        "scoring process, from the same evaluation.",
    )
    confusion_score: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Score threshold of the detections counted in the confusion matrix "
        "(matched to ground truth at IoU 0.5).",
    )
