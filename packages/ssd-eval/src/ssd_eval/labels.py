"""Label map between contiguous training labels and COCO category ids.

Rule (interfaces.md, "Label map"): contiguous label i (1..C-1) is the i-th entry of the ground-truth
json's `categories` list in FILE order (not sorted by id); label 0 is background; C = number of
categories + 1. `ssd_data` derives the same map independently (ssd_eval must not import it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BACKGROUND_CATEGORY_ID = -1
"""Placeholder stored at index 0 of `label_to_category_id` (label 0 is background, never scored)."""


class LabelMapError(ValueError):
    """The `categories` list of a ground-truth json cannot define a label map."""


def category_ids_in_file_order(categories: Sequence[Mapping[str, Any]]) -> list[int]:
    """COCO category ids in the order they appear in the json's `categories` list.

    Raises LabelMapError naming the offending entry when an id is missing, not an integer, or
    repeated.
    """
    if not isinstance(categories, Sequence) or isinstance(categories, str | bytes):
        raise LabelMapError(
            f"'categories' must be a list of objects, got {type(categories).__name__}"
        )
    ids: list[int] = []
    seen: dict[int, int] = {}
    for index, category in enumerate(categories):
        if not isinstance(category, Mapping) or "id" not in category:
            raise LabelMapError(f"categories[{index}] = {category!r} has no 'id'")
        cat_id = category["id"]
        if isinstance(cat_id, bool) or not isinstance(cat_id, int):
            raise LabelMapError(f"categories[{index}] = {category!r}: 'id' must be an integer")
        if cat_id in seen:
            raise LabelMapError(
                f"categories[{index}] = {category!r} repeats the id of categories[{seen[cat_id]}]"
            )
        seen[cat_id] = index
        ids.append(cat_id)
    return ids


def label_to_category_id(categories: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Inverse label map as an int64 array of shape [C]: `arr[label]` is the COCO category id.

    `arr[0]` is BACKGROUND_CATEGORY_ID (-1); `arr[i]` for i >= 1 is the id of categories[i - 1].
    """
    ids = category_ids_in_file_order(categories)
    return np.asarray([BACKGROUND_CATEGORY_ID, *ids], dtype=np.int64)


def category_id_to_label(categories: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Forward label map {COCO category id: contiguous label 1..C-1} in file order."""
    return {cat_id: label for label, cat_id in enumerate(category_ids_in_file_order(categories), 1)}


def num_classes(categories: Sequence[Mapping[str, Any]]) -> int:
    """C = number of categories + 1 (background)."""
    return len(category_ids_in_file_order(categories)) + 1
