"""The per-category table printed after the 12 COCO numbers (fits 100 columns).

    category              id     AP   AP50   AP75    APs    APm    APl  AR100      gt    dets
    toaster               80  0.012  0.034  0.000      -  0.010  0.021  0.100       9      31
    ...

Rows are sorted weakest first by AP (or by another key); "-" marks a number COCO cannot compute
(no ground truth of the category in that area range); categories without any ground truth come last.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ssd_eval.per_class import PerClassResult

SortKey = Literal["ap", "ap50", "ap75", "ar100", "gt", "name", "id"]
SORT_KEYS: tuple[str, ...] = ("ap", "ap50", "ap75", "ar100", "gt", "name", "id")
TABLE_WIDTH = 100
_NAME_WIDTH = 22
_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


def _number(value: float) -> str:
    return f"{value:6.3f}" if value > -1 else f"{'-':>6}"


def _order(per_class: PerClassResult, sort: str) -> list[int]:
    """Row order: numeric keys ascending (weakest first; gt most first), missing values last."""
    k = len(per_class.names)
    if sort == "name":
        return sorted(range(k), key=lambda i: per_class.names[i].lower())
    if sort == "id":
        return np.argsort(per_class.category_ids, kind="stable").tolist()
    if sort == "gt":
        return np.argsort(-per_class.gt_counts, kind="stable").tolist()
    column = {"ap": 0, "ap50": 1, "ap75": 2, "ar100": 6}.get(sort)
    if column is None:
        raise ValueError(f"unknown sort key {sort!r}; choose one of {SORT_KEYS}")
    values = per_class.metrics[:, column]
    missing = values <= -1
    return np.lexsort((values, missing)).tolist()


def _name(name: str) -> str:
    return name if len(name) <= _NAME_WIDTH else name[: _NAME_WIDTH - 1] + "~"


def format_per_class_table(per_class: PerClassResult, sort: str = "ap") -> str:
    """The table (no trailing newline): a header line, then one line per category, each at most
    TABLE_WIDTH characters. ``sort``: one of SORT_KEYS (see _order)."""
    header = f"{'category':<{_NAME_WIDTH}} {'id':>6} " + " ".join(f"{m:>6}" for m in _METRICS)
    header += f" {'gt':>8} {'dets':>9}"
    lines = [header]
    for i in _order(per_class, sort):
        numbers = " ".join(_number(float(v)) for v in per_class.metrics[i])
        lines.append(
            f"{_name(per_class.names[i]):<{_NAME_WIDTH}} {int(per_class.category_ids[i]):>6} "
            f"{numbers} {int(per_class.gt_counts[i]):>8} {int(per_class.detection_counts[i]):>9}"
        )
    return "\n".join(lines)
