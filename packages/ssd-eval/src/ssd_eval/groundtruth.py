"""Loading and checking a COCO ground-truth json (bbox task) for scoring.

`load_ground_truth` parses the json once, checks the fields that box scoring relies on (and that
pycocotools would otherwise fail on deep inside, or silently misread), and keeps the lookup arrays
the evaluator needs: image sizes by image id and the inverse label map.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssd_eval.labels import LabelMapError, label_to_category_id


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
        label_to_category_id: int64 [C]; index 0 (background) holds -1.
        category_ids: sorted list of the COCO category ids.
    """

    dataset: dict[str, Any]
    source: str
    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    label_to_category_id: np.ndarray
    category_ids: list[int]

    @property
    def num_classes(self) -> int:
        """C = number of categories + 1."""
        return int(self.label_to_category_id.shape[0])

    @property
    def num_images(self) -> int:
        return int(self.image_ids.shape[0])


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
    try:
        inverse_map = label_to_category_id(dataset["categories"])
    except LabelMapError as error:
        raise _fail(source, str(error)) from None
    category_ids = sorted(int(c) for c in inverse_map[1:])
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
        label_to_category_id=inverse_map,
        category_ids=category_ids,
    )


def load_ground_truth(gt: str | Path | Mapping[str, Any] | GroundTruth) -> GroundTruth:
    """Load and check a COCO ground-truth json file (or dict); GroundTruth passes through."""
    if isinstance(gt, GroundTruth):
        return gt
    if isinstance(gt, Mapping):
        return ground_truth_from_dict(gt)
    path = Path(gt)
    dataset = read_json(path, GroundTruthError, "ground-truth json")
    return ground_truth_from_dict(dataset, source=str(path))
