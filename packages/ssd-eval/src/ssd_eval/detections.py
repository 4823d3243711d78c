"""COCO detections as a float64 array, read from a COCO results json (or list), and checked.

The array form used throughout ssd_eval is `rows`: float64 [R, 7] with columns
(image_id, x, y, w, h, score, category_id); boxes are COCO xywh in original-image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ssd_eval.groundtruth import GroundTruth, read_json

COLUMNS = ("image_id", "x", "y", "w", "h", "score", "category_id")


class DetectionsError(ValueError):
    """A detection record is malformed or does not fit the ground truth."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rows_from_records(records: Any, source: str = "detections") -> np.ndarray:
    """COCO results list [{image_id, category_id, bbox: [x, y, w, h], score}, ...] -> rows [R, 7].

    Checks the JSON shape only (types, keys, lengths); `check_rows` checks the values.
    Raises DetectionsError naming the record index and content.
    """
    if not isinstance(records, list):
        raise DetectionsError(
            f"{source}: a COCO results file must hold a JSON list of detection objects, "
            f"got {type(records).__name__}"
        )
    rows = np.empty((len(records), len(COLUMNS)), dtype=np.float64)
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DetectionsError(f"{source}: record {index} = {record!r} is not an object")
        image_id, category_id = record.get("image_id"), record.get("category_id")
        bbox, score = record.get("bbox"), record.get("score")
        if not (_is_int(image_id) and _is_int(category_id)):
            raise DetectionsError(
                f"{source}: record {index} = {record!r}: 'image_id' and 'category_id' must be integers"
            )
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DetectionsError(
                f"{source}: record {index} = {record!r}: 'bbox' must be a list of 4 numbers [x, y, w, h]"
            )
        if not _is_number(score):
            raise DetectionsError(
                f"{source}: record {index} = {record!r}: 'score' must be a number"
            )
        rows[index] = (image_id, *bbox, score, category_id)
    return rows


def load_detections(path: str | Path) -> np.ndarray:
    """Read a COCO results json file into rows [R, 7] (shape checks only; see check_rows)."""
    path = Path(path)
    records = read_json(path, DetectionsError, "detections file")
    return rows_from_records(records, source=str(path))


def describe_row(row: np.ndarray) -> str:
    """One row as a COCO results record, for error messages."""
    image_id, x, y, w, h, score, category_id = (float(v) for v in row)

    def as_int(v: float) -> int | float:
        return int(v) if math.isfinite(v) and v == int(v) else v

    return (
        f"{{'image_id': {as_int(image_id)}, 'category_id': {as_int(category_id)}, "
        f"'bbox': [{x!r}, {y!r}, {w!r}, {h!r}], 'score': {score!r}}}"
    )


def invalid_row_reasons(rows: np.ndarray, gt: GroundTruth) -> list[tuple[int, str]]:
    """(index, reason) of the first invalid row for each kind of problem, by index (empty if fine).

    Problems: unknown image id, unknown category id, non-finite value, negative width or height.
    """
    if rows.ndim != 2 or rows.shape[1] != len(COLUMNS):
        raise DetectionsError(f"detections must have shape [R, {len(COLUMNS)}], got {rows.shape}")
    checks = [
        (~np.isfinite(rows).all(axis=1), "a value is not finite"),
        (~np.isin(rows[:, 0], gt.image_ids), "'image_id' is not in the ground truth"),
        (~np.isin(rows[:, 6], gt.category_ids), "'category_id' is not in the ground truth"),
        ((rows[:, 3] < 0) | (rows[:, 4] < 0), "the box has a negative width or height"),
    ]
    found = []
    for bad, reason in checks:
        hits = np.flatnonzero(bad)
        if hits.size:
            found.append((int(hits[0]), reason))
    return sorted(found)


def check_rows(rows: np.ndarray, gt: GroundTruth, source: str = "detections") -> None:
    """Raise DetectionsError naming the first invalid detection (index and content), if any."""
    problems = invalid_row_reasons(rows, gt)
    if problems:
        index, reason = problems[0]
        count = len(problems)
        more = f" ({count} kinds of problem found; first shown)" if count > 1 else ""
        raise DetectionsError(
            f"{source}: record {index} = {describe_row(rows[index])}: {reason}{more}"
        )


def rows_to_records(rows: np.ndarray) -> list[dict[str, Any]]:
    """rows [R, 7] -> COCO results list (python ints and floats; input to COCO.loadRes)."""
    image_ids = rows[:, 0].astype(np.int64).tolist()
    boxes = rows[:, 1:5].tolist()
    scores = rows[:, 5].tolist()
    category_ids = rows[:, 6].astype(np.int64).tolist()
    return [
        {"image_id": i, "category_id": c, "bbox": b, "score": s}
        for i, c, b, s in zip(image_ids, category_ids, boxes, scores, strict=True)
    ]
