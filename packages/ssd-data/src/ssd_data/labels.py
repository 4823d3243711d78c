"""The label map: COCO category ids <-> contiguous training labels (interfaces.md "Label map").

The one definition that data loading, evaluation and prediction share: contiguous label i
(1..C-1) is the i-th entry of the annotation file's ``categories`` list in file order (not
sorted by id); label 0 is background and padding. C = number of categories + 1. ``ssd_eval``
receives :func:`label_to_category_id` from its caller rather than deriving the map itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BACKGROUND = 0
"""Label 0: background in the model's output and padding in ground-truth batches; also the value
stored at index 0 of :func:`label_to_category_id` (no COCO category)."""


class LabelMapError(ValueError):
    """A ``categories`` list cannot define the label map; the message names the entry."""


def category_ids_in_file_order(categories: Sequence[Mapping[str, Any]]) -> list[int]:
    """COCO category ids in the order the ``categories`` list gives them.

    Raises :class:`LabelMapError` naming the entry when an id is missing, not an integer, or
    repeated, or when ``categories`` is not a list.
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
        category_id = category["id"]
        if isinstance(category_id, bool) or not isinstance(category_id, int):
            raise LabelMapError(f"categories[{index}] = {category!r}: 'id' must be an integer")
        if category_id in seen:
            raise LabelMapError(
                f"categories[{index}] = {category!r} repeats the id of categories[{seen[category_id]}]"
            )
        seen[category_id] = index
        ids.append(category_id)
    return ids


def label_map(categories: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Forward map {COCO category id: contiguous label 1..C-1} (file order)."""
    return {cid: label for label, cid in enumerate(category_ids_in_file_order(categories), 1)}


def label_to_category_id(categories: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Inverse map as int64 [C]: ``arr[label]`` is the COCO category id of ``label``;
    ``arr[0]`` is :data:`BACKGROUND` (0, no category)."""
    return np.asarray([BACKGROUND, *category_ids_in_file_order(categories)], dtype=np.int64)
