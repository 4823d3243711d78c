"""What ``ssd-predict`` reads: image paths from files / folders / globs, image ids, class names.

- :func:`collect_images`: SOURCE arguments -> sorted unique image paths.
- :func:`assign_image_ids`: the ``image_id`` of each image (the COCO id when a ground-truth json
  lists the file, else the number in the file stem when every stem has a distinct one, else the
  index in the sorted list).
- :func:`label_map`: ``class_names[label]`` and ``category_ids[label]`` for contiguous labels
  (index 0 = background), from ``--gt``, the weights' metadata or the training settings stored in it.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
_DIGITS = re.compile(r"(\d+)")


class PredictError(ValueError):
    """Bad input to ``ssd-predict``; the message says which file/argument and what to do."""


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def collect_images(sources: Sequence[str]) -> list[Path]:
    """Image files named by ``sources``: files (any suffix), folders (recursive, image suffixes
    only) and glob patterns (``**`` allowed). Sorted, duplicates removed.

    Raises :class:`PredictError` for a source that matches nothing, or when no image is found.
    """
    found: set[Path] = set()
    for source in sources:
        path = Path(source).expanduser()
        if path.is_file():
            found.add(path)
        elif path.is_dir():
            found.update(p for p in path.rglob("*") if _is_image(p))
        elif glob.has_magic(source):
            matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
            found.update(p for p in matches if _is_image(p))
            if not matches:
                raise PredictError(f"the pattern {source!r} matches no file")
        else:
            raise PredictError(f"{source}: no such file or folder")
    if not found:
        raise PredictError(
            f"no images found in {', '.join(sources)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return sorted(found)


def stem_number(path: Path) -> int | None:
    """The last run of digits in the file stem (``000000139.jpg`` -> 139), None if there is none."""
    runs = _DIGITS.findall(path.stem)
    return int(runs[-1]) if runs else None


def assign_image_ids(
    paths: Sequence[Path], gt_file_ids: Mapping[str, int] | None = None
) -> list[int]:
    """``image_id`` per path, unique.

    With ``gt_file_ids`` ({file name: COCO image id} of a ground-truth json), a file whose name
    (or path relative to the json's image folder: the name is matched on its last component) is
    listed gets that id. The others get their stem's number when every one has a distinct number
    not used by a ground-truth id; otherwise every image without a ground-truth id gets
    ``index`` (its position in ``paths``), shifted past the largest ground-truth id.
    """
    gt_file_ids = dict(gt_file_ids or {})
    ids: list[int | None] = [gt_file_ids.get(p.name) for p in paths]
    rest = [i for i, v in enumerate(ids) if v is None]
    taken = {v for v in ids if v is not None}
    numbers = [stem_number(paths[i]) for i in rest]
    distinct = all(n is not None for n in numbers) and len(set(numbers)) == len(numbers)
    if distinct and not taken.intersection(numbers):
        for i, n in zip(rest, numbers, strict=True):
            ids[i] = n
        return [int(v) for v in ids if v is not None]
    offset = max(taken) + 1 if taken else 0
    for i in rest:
        ids[i] = offset + i
    return [int(v) for v in ids if v is not None]


@dataclass(frozen=True)
class LabelMap:
    """``names[label]`` and ``category_ids[label]`` for labels 0..C-1 (index 0: background)."""

    names: list[str]
    category_ids: list[int]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.names)


def from_categories(categories: Sequence[Mapping[str, Any]], source: str) -> LabelMap:
    """Label map of a COCO ``categories`` list (the one rule: ``ssd_data.label_to_category_id``).

    Raises :class:`PredictError` naming ``source`` when the list cannot define one.
    """
    from ssd_data.labels import LabelMapError, label_to_category_id

    try:
        ids = label_to_category_id(categories).tolist()
    except LabelMapError as error:
        raise PredictError(f"{source}: {error}") from None
    names = [str(c.get("name", c["id"])) for c in categories]
    return LabelMap(["background", *names], ids, source)


def _synthetic_categories(settings: Mapping[str, Any], num_classes: int) -> LabelMap | None:
    """The synthetic dataset's categories when the settings describe a synthetic default job."""
    from ssd_data.synthetic.categories import coco_category_dicts
    from ssd_data.synthetic.presets import resolve_difficulty

    syn = settings.get("synthetic") or {}
    root = str((settings.get("data") or {}).get("root") or "")
    if not syn or (root and "synthetic-" not in Path(root).name):
        return None
    try:
        if syn.get("categories", "all") == "all":
            cats = coco_category_dicts()
        else:
            cats = coco_category_dicts(set(resolve_difficulty(syn.get("difficulty")).category_ids))
    except (ValueError, KeyError, TypeError):
        return None
    if len(cats) + 1 != num_classes:
        return None
    return from_categories(cats, "the synthetic dataset's categories (weights' settings)")


def label_map(metadata: Mapping[str, Any], num_classes: int, gt: Any = None) -> LabelMap:
    """Class names and COCO category ids of the model's labels, first match wins:

    1. ``gt`` (an ``ssd_eval`` GroundTruth): its categories; must have ``num_classes - 1`` of them;
    2. ``metadata["categories"]`` (a COCO categories list, if the weights carry one);
    3. the val json named in ``metadata["settings"]["data"]["val_annotations"]`` when it exists;
    4. the synthetic dataset's categories when the settings describe the synthetic default job;
    5. COCO 2017's 80 categories when ``num_classes == COCO_NUM_CLASSES`` (81);
    6. ``"class <i>"`` with category id ``i``.
    """
    from ssd_core import COCO_NUM_CLASSES
    from ssd_data.synthetic.categories import coco_category_dicts

    if gt is not None:
        found = from_categories(gt.dataset["categories"], f"ground truth {gt.source}")
        if found.num_classes != num_classes:
            raise PredictError(
                f"{gt.source} lists {found.num_classes - 1} categories but the weights' model has "
                f"{num_classes - 1} classes (+ background): pass the ground truth it was trained with"
            )
        return found
    if isinstance(metadata.get("categories"), list):
        found = from_categories(metadata["categories"], "the weights' metadata")
        if found.num_classes == num_classes:
            return found
    settings = metadata.get("settings") or {}
    val_json = (settings.get("data") or {}).get("val_annotations")
    if val_json and Path(val_json).is_file():
        try:
            cats = json.loads(Path(val_json).read_text()).get("categories", [])
            found = from_categories(cats, f"{val_json} (weights' settings)")
            if found.num_classes == num_classes:
                return found
        except (OSError, ValueError, AttributeError):
            pass
    synthetic = _synthetic_categories(settings, num_classes)
    if synthetic is not None:
        return synthetic
    if num_classes == COCO_NUM_CLASSES:
        return from_categories(coco_category_dicts(), "COCO 2017's 80 categories")
    names = ["background", *(f"class {i}" for i in range(1, num_classes))]
    return LabelMap(names, list(range(num_classes)), "numbered classes (no names known)")
