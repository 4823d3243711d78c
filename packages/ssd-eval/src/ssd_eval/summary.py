"""The familiar 12-line COCO summary table, formatted exactly as pycocotools prints it."""

from __future__ import annotations

from collections.abc import Sequence

_IOUS = "0.50:0.95"
_AREAS = ("small", "medium", "large")
_LINES = (  # (AP or AR, IoU, area, maxDets), in COCOeval.summarize()'s order
    *((1, iou, "all", 100) for iou in (_IOUS, "0.50", "0.75")),
    *((1, _IOUS, area, 100) for area in _AREAS),
    *((0, _IOUS, "all", max_dets) for max_dets in (1, 10, 100)),
    *((0, _IOUS, area, 100) for area in _AREAS),
)


def format_summary(stats: Sequence[float]) -> str:
    """12 COCO stats -> the 12-line table (no trailing newline), as COCOeval.summarize() prints."""
    if len(stats) != len(_LINES):
        raise ValueError(f"expected {len(_LINES)} COCO stats, got {len(stats)}")
    lines = []
    for value, (ap, iou, area, max_dets) in zip(stats, _LINES, strict=True):
        title = "Average Precision" if ap else "Average Recall"
        kind = "(AP)" if ap else "(AR)"
        lines.append(
            f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] "
            f"= {float(value):0.3f}"
        )
    return "\n".join(lines)
