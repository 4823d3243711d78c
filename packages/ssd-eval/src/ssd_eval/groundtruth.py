"""Loading and checking a COCO ground-truth json (bbox task) for scoring.

`load_ground_truth` parses the json once, checks the fields that box scoring relies on (and that
pycocotools would otherwise fail on deep inside, or silently misread), and keeps the lookup arrays
the evaluator needs: image sizes by image id and the category ids. The label map (contiguous
label -> category id) is not derived here: the caller of `CocoEvaluator` hands it over.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def read_json(path: Path, error: type[Exception], what: str) -> Any:
    """Parse ``path``; a missing file or bad JSON raises ``error`` naming the file and the problem."""
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        with path.open() as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None


class GroundTruthError(ValueError):
    """The ground-truth json is unreadable or lacks what box scoring needs."""


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """A checked COCO ground truth.

    Attributes:
        dataset: the parsed json (dict with 'images', 'annotations', 'categories').
        source: file it came from ("<dict>" when built from a dict).
        image_ids: int64 [I], sorted ascending.
        heights, widths: int64 [I], original image size in pixels, aligned with `image_ids`.
        category_ids: sorted list of the COCO category ids.
    """

    dataset: dict[str, Any]
    source: str
    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    category_ids: list[int]

    @property
    def num_images(self) -> int:
        return int(self.image_ids.shape[0])

    @property
    def file_category_ids(self) -> np.ndarray:
        """int64 [K]: the category ids in the json's ``categories`` order (the per-class
        tables and plots list classes in this order)."""
        return np.asarray([c["id"] for c in self.dataset["categories"]], dtype=np.int64)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fail(source: str, message: str) -> GroundTruthError:
    return GroundTruthError(f"{source}: {message}")


def _check_images(images: Any, source: str) -> dict[int, tuple[int, int]]:
    if not isinstance(images, list):
        raise _fail(source, "'images' must be a list of objects")
    sizes: dict[int, tuple[int, int]] = {}
    for index, image in enumerate(images):
        if not isinstance(image, Mapping):
            raise _fail(source, f"images[{index}] = {image!r} is not an object")
        image_id, height, width = image.get("id"), image.get("height"), image.get("width")
        if not _is_int(image_id):
            raise _fail(source, f"images[{index}] = {image!r}: 'id' must be an integer")
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            raise _fail(
                source,
                f"images[{index}] (id {image_id}): 'height' and 'width' must be positive integers, "
                f"got height={height!r}, width={width!r}",
            )
        if image_id in sizes:
            raise _fail(source, f"images[{index}] repeats image id {image_id}")
        sizes[image_id] = (height, width)
    return sizes


def _check_categories(categories: Any, source: str) -> list[int]:
    if not isinstance(categories, list):
        raise _fail(source, "'categories' must be a list of objects")
    seen: dict[int, int] = {}
    for index, category in enumerate(categories):
        category_id = category.get("id") if isinstance(category, Mapping) else None
        if not _is_int(category_id):
            raise _fail(source, f"categories[{index}] = {category!r}: 'id' must be an integer")
        if category_id in seen:
            raise _fail(
                source,
                f"categories[{index}] = {category!r} repeats the id of categories[{seen[category_id]}]",
            )
        seen[category_id] = index
    return sorted(seen)


def _check_annotations(
    annotations: Any, source: str, image_ids: Mapping[int, Any], category_ids: set[int]
) -> None:
    if not isinstance(annotations, list):
        raise _fail(source, "'annotations' must be a list of objects")
    seen_ids: set[int] = set()
    for index, ann in enumerate(annotations):
        where = f"annotations[{index}] = {ann!r}"
        if not isinstance(ann, Mapping):
            raise _fail(source, f"{where} is not an object")
        ann_id = ann.get("id")
        if not _is_int(ann_id):
            raise _fail(source, f"{where}: 'id' must be an integer")
        if ann_id in seen_ids:
            raise _fail(source, f"{where}: annotation id {ann_id} is repeated")
        seen_ids.add(ann_id)
        if ann.get("image_id") not in image_ids:
            raise _fail(source, f"{where}: 'image_id' is not listed in 'images'")
        if ann.get("category_id") not in category_ids:
            raise _fail(source, f"{where}: 'category_id' is not listed in 'categories'")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise _fail(source, f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h]")
        if bbox[2] < 0 or bbox[3] < 0:
            raise _fail(source, f"{where}: 'bbox' has a negative width or height")
        if not _is_number(ann.get("area")):
            raise _fail(
                source, f"{where}: 'area' must be a finite number (COCO area ranges use it)"
            )
        if ann.get("iscrowd", 0) not in (0, 1):
            raise _fail(source, f"{where}: 'iscrowd' must be 0 or 1")


def ground_truth_from_dict(dataset: Mapping[str, Any], source: str = "<dict>") -> GroundTruth:
    """Check a parsed COCO ground truth and build its lookup arrays (see GroundTruth)."""
    if not isinstance(dataset, Mapping):
        raise _fail(source, f"top level must be a JSON object, got {type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise _fail(source, f"missing '{key}' (is this a COCO instances_*.json file?)")
    sizes = _check_images(dataset["images"], source)
    category_ids = _check_categories(dataset["categories"], source)
    _check_annotations(dataset["annotations"], source, sizes, set(category_ids))
    image_ids = np.asarray(sorted(sizes), dtype=np.int64)
    heights = np.asarray([sizes[int(i)][0] for i in image_ids], dtype=np.int64)
    widths = np.asarray([sizes[int(i)][1] for i in image_ids], dtype=np.int64)
    return GroundTruth(
        dataset=dict(dataset),
        source=source,
        image_ids=image_ids,
        heights=heights,
        widths=widths,
        category_ids=category_ids,
    )


def check_label_map(
    gt: GroundTruth, label_to_category_id: Sequence[int] | np.ndarray
) -> np.ndarray:
    """The model's label map as int64 [C], checked against ``gt``.

    ``label_to_category_id[label]`` is the COCO category id of contiguous label 1..C-1; entry 0
    (background) is not used. The caller owns the rule that builds it (interfaces.md "Label
    map"; ``ssd_data.label_to_category_id``). Raises GroundTruthError when it is not a 1-D
    integer array of at least two entries, or when labels 1..C-1 name a category id twice or one
    that ``gt``'s 'categories' does not list.
    """
    array = np.asarray(label_to_category_id)
    if array.ndim != 1 or array.shape[0] < 2 or array.dtype.kind not in "iu":
        raise _fail(
            gt.source,
            "the label map must be integers [C >= 2] (entry i = category id of label i), got "
            f"{array.dtype} {tuple(array.shape)}",
        )
    ids = array[1:].tolist()
    unknown = sorted(set(ids) - set(gt.category_ids))
    if unknown or len(set(ids)) != len(ids):
        raise _fail(
            gt.source,
            f"the model's label map {ids} does not fit 'categories' {gt.category_ids}"
            + (f" (ids {unknown} are not listed)" if unknown else " (an id repeats)")
            + ": evaluate on the dataset the model was trained for",
        )
    return array.astype(np.int64)


def load_ground_truth(gt: str | Path | Mapping[str, Any] | GroundTruth) -> GroundTruth:
    """Load and check a COCO ground-truth json file (or dict); GroundTruth passes through."""
    if isinstance(gt, GroundTruth):
        return gt
    if isinstance(gt, Mapping):
        return ground_truth_from_dict(gt)
    path = Path(gt)
    dataset = read_json(path, GroundTruthError, "ground-truth json")
    return ground_truth_from_dict(dataset, source=str(path))
