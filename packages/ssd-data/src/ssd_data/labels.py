"""COCO category ids <-> contiguous training labels (interfaces.md "Label map").

Contiguous label i (1..C-1) is the i-th entry of the annotation file's ``categories`` list in
file order (not sorted by id); 0 is the background. C = number of categories + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def label_map(categories: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Map each COCO category id to its contiguous label (file order, starting at 1).

    Raises ``ValueError`` when a category lacks an ``id`` or an id repeats.
    """
    mapping: dict[int, int] = {}
    for position, category in enumerate(categories):
        if "id" not in category:
            raise ValueError(f"categories[{position}] has no 'id': {category!r}")
        category_id = int(category["id"])
        if category_id in mapping:
            raise ValueError(f"categories[{position}]: category id {category_id} appears twice")
        mapping[category_id] = position + 1
    return mapping


def label_to_category_id(categories: Sequence[dict[str, Any]]) -> np.ndarray:
    """Inverse of :func:`label_map` as an array: int64[C], entry 0 (background) is 0 and unused."""
    ids = np.zeros(len(categories) + 1, dtype=np.int64)
    for label, category_id in ((lbl, cid) for cid, lbl in label_map(categories).items()):
        ids[label] = category_id
    return ids
