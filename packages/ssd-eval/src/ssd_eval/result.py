"""The result of one COCO box evaluation: mAP, the 12 COCO stats and the epoch it belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ssd_eval.per_class import PerClassResult

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)
"""Names of COCOeval.stats[0..11] in pycocotools' order (-1 means 'no ground truth in range')."""


class EvalResult(NamedTuple):
    """mAP (= stats[0], IoU 0.50:0.95), the 12 COCOeval stats as python floats, the epoch, and
    the per-category results when they were computed (by the scoring process; across ranks only
    rank 0 holds them)."""

    map: float
    stats: list[float]
    epoch: int | None = None
    per_class: PerClassResult | None = None

    @classmethod
    def from_stats(cls, stats: list[float], epoch: int | None = None) -> EvalResult:
        values = [float(v) for v in stats]
        if len(values) != len(STAT_NAMES):
            raise ValueError(f"expected {len(STAT_NAMES)} COCO stats, got {len(values)}")
        return cls(map=values[0], stats=values, epoch=epoch)

    def as_dict(self) -> dict[str, float]:
        """{"AP": ..., "AP50": ..., ...} for logging."""
        return dict(zip(STAT_NAMES, self.stats, strict=True))
