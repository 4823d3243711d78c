"""The familiar 12-line COCO summary table, formatted exactly as pycocotools prints it."""

from __future__ import annotations

from collections.abc import Sequence

_LINES = (
    # (AP or AR, IoU, area, maxDets)
    (1, "0.50:0.95", "all", 100),
    (1, "0.50", "all", 100),
    (1, "0.75", "all", 100),
    (1, "0.50:0.95", "small", 100),
    (1, "0.50:0.95", "medium", 100),
    (1, "0.50:0.95", "large", 100),
    (0, "0.50:0.95", "all", 1),
    (0, "0.50:0.95", "all", 10),
    (0, "0.50:0.95", "all", 100),
    (0, "0.50:0.95", "small", 100),
    (0, "0.50:0.95", "medium", 100),
    (0, "0.50:0.95", "large", 100),
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
