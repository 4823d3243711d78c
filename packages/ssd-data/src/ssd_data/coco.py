"""COCO-format annotations parsed once into compact numpy arrays (``CocoIndex``).

The json object graph of train2017 (~450 MB of text, several GB of Python objects) is read
once and reduced to a few flat arrays: file names (one utf-8 blob plus offsets), image ids,
heights, widths, and per-annotation boxes (normalised ltrb float32), contiguous labels and
crowd flags addressed through per-image offsets. Worker processes share or pickle these arrays
cheaply. The parsed form can be cached as ``<json stem>.ssd-index.npz`` next to the json, keyed
by the json's size and mtime (numpy arrays only, loaded with ``allow_pickle=False``).

Rules (mlperf-ssd-v0.7.md 3.1, interfaces.md "Label map"):
- category ids map to labels 1..K in the file's ``categories`` order, 0 = background;
- an image "has annotations" if any annotation names it, crowd ones included, counted before
  degenerate boxes are removed (COCO train2017: 117,266 of 118,287 images);
- COCO ``[x, y, w, h]`` pixel boxes become ltrb, are clipped to the image and normalised by
  the image's annotated width and height; boxes that are empty after clipping (zero or negative
  width/height, or entirely outside the image) are dropped and counted, and a warning names the
  first few annotation ids;
- structural problems (invalid json, missing keys, an annotation naming an unknown image or
  category, a bbox that is not four finite numbers, duplicate ids, non-positive image sizes)
  raise :class:`~ssd_data.errors.AnnotationError` naming the file and the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssd_data.errors import AnnotationError
from ssd_data.labels import LabelMapError, label_map, label_to_category_id

log = logging.getLogger(__name__)

_CACHE_VERSION = 1
_CACHE_SUFFIX = ".ssd-index.npz"


@dataclass(frozen=True)
class CocoIndex:
    """Compact, read-only view of a COCO-format annotation file.

    Image arrays are indexed by the position ``i`` in ``0..num_images-1`` (file order of the
    json's ``images`` list, restricted to annotated images when ``skip_empty``). Box arrays
    hold every kept box of every image; image ``i``'s boxes are rows
    ``box_offsets[r]:box_offsets[r + 1]`` with ``r = rows[i]``.
    """

    path: Path
    categories: list[dict[str, Any]]
    image_ids: np.ndarray  # int64[I]  all images of the file
    heights: np.ndarray  # int64[I]
    widths: np.ndarray  # int64[I]
    name_blob: np.ndarray  # uint8[...] utf-8 file names, concatenated
    name_offsets: np.ndarray  # int64[I + 1]
    box_offsets: np.ndarray  # int64[I + 1]
    boxes: np.ndarray  # float32[T, 4] ltrb normalised to [0, 1]
    labels: np.ndarray  # int64[T] contiguous 1..K
    iscrowd: np.ndarray  # bool[T]
    has_annotations: np.ndarray  # bool[I] any annotation, before degenerate boxes were dropped
    rows: np.ndarray  # int64[N] selected images (positions into the image arrays)
    counts: dict[str, int] = field(default_factory=dict)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_json(cls, path: str | Path, *, skip_empty: bool, cache: bool = True) -> CocoIndex:
        """Read a COCO-format ``instances_*.json``.

        ``skip_empty=True`` keeps only images with at least one annotation (training, and the
        default evaluation set); ``False`` keeps every image. ``cache`` reads/writes the parsed
        form next to the json (silently skipped where the folder is not writable).
        """
        path = Path(path)
        if not path.is_file():
            raise AnnotationError(
                f"annotation file {path} does not exist; check data.root / the annotation paths "
                "or fetch COCO with `ssd-data download --root DIR`"
            )
        with _cache_lock(path) if cache else contextlib.nullcontext():
            cached = _load_cache(path) if cache else None
            arrays = cached if cached is not None else _parse(path)
            if cache and cached is None:
                _save_cache(path, arrays)
        if cached is not None and int(arrays["count_dropped_degenerate_boxes"]):
            log.warning(
                "%s: %d degenerate boxes dropped (cached parse; delete %s to see examples)",
                path,
                int(arrays["count_dropped_degenerate_boxes"]),
                _cache_path(path).name,
            )
        categories = json.loads(bytes(arrays.pop("categories_json")).decode("utf-8"))
        counts = {
            k[len("count_") :]: int(arrays.pop(k)) for k in list(arrays) if k.startswith("count_")
        }
        has = arrays["has_annotations"]
        rows = np.flatnonzero(has) if skip_empty else np.arange(len(has), dtype=np.int64)
        return cls(
            path=path, categories=categories, rows=rows.astype(np.int64), counts=counts, **arrays
        )

    # ---------------------------------------------------------------- queries
    @property
    def num_images(self) -> int:
        """Number of selected images."""
        return len(self.rows)

    @property
    def num_classes(self) -> int:
        """C = number of categories + 1 (background)."""
        return len(self.categories) + 1

    @property
    def label_to_category_id(self) -> np.ndarray:
        """int64[C]: COCO category id of each contiguous label (index 0 unused, 0)."""
        return label_to_category_id(self.categories)

    def image_id(self, i: int) -> int:
        """COCO id of selected image ``i``."""
        return int(self.image_ids[self.rows[i]])

    def image_size(self, i: int) -> tuple[int, int]:
        """Annotated (height, width) of selected image ``i``."""
        r = self.rows[i]
        return int(self.heights[r]), int(self.widths[r])

    def file_name(self, i: int) -> str:
        """File name of selected image ``i``, relative to the image folder."""
        r = self.rows[i]
        return bytes(self.name_blob[self.name_offsets[r] : self.name_offsets[r + 1]]).decode(
            "utf-8"
        )

    def annotations(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes float32[n, 4] (ltrb, normalised), labels int64[n], iscrowd bool[n] of image ``i``."""
        r = self.rows[i]
        lo, hi = self.box_offsets[r], self.box_offsets[r + 1]
        return self.boxes[lo:hi], self.labels[lo:hi], self.iscrowd[lo:hi]


# -------------------------------------------------------------------- parsing
def _fail(path: Path, where: str, what: str) -> AnnotationError:
    return AnnotationError(
        f"{path}: {where}: {what}. Fix the annotation file (COCO format: "
        "https://cocodataset.org/#format-data) or regenerate/re-download it."
    )


def _get(path: Path, record: Any, key: str, where: str) -> Any:
    if not isinstance(record, dict):
        raise _fail(path, where, f"expected an object, got {type(record).__name__}")
    if key not in record:
        raise _fail(path, where, f"missing key '{key}'")
    return record[key]


def _as_int(path: Path, value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise _fail(path, where, f"'{key}' must be an integer, got {value!r}")
    return int(value)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); the file is "
            "corrupt or truncated: regenerate or re-download it"
        ) from None
    except (UnicodeDecodeError, OSError) as e:
        raise AnnotationError(f"{path}: cannot read the annotation file ({e})") from None
    if not isinstance(data, dict):
        raise _fail(path, "top level", f"expected an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, "top level", f"missing list '{key}'")
    return data


def _parse(path: Path) -> dict[str, np.ndarray]:
    data = _load_json(path)
    categories: list[dict[str, Any]] = data["categories"]
    try:
        cat_to_label = label_map(categories)
    except LabelMapError as e:
        raise _fail(path, "categories", str(e)) from None

    images: Sequence[dict[str, Any]] = data["images"]
    n = len(images)
    image_ids = np.empty(n, np.int64)
    heights = np.empty(n, np.int64)
    widths = np.empty(n, np.int64)
    names: list[bytes] = []
    position: dict[int, int] = {}
    for i, img in enumerate(images):
        where = f"images[{i}]"
        image_id = _as_int(path, _get(path, img, "id", where), where, "id")
        where = f"images[{i}] (id {image_id})"
        if image_id in position:
            raise _fail(path, where, "image id appears twice")
        h = _as_int(path, _get(path, img, "height", where), where, "height")
        w = _as_int(path, _get(path, img, "width", where), where, "width")
        if h <= 0 or w <= 0:
            raise _fail(path, where, f"image size must be positive, got height={h} width={w}")
        name = _get(path, img, "file_name", where)
        if not isinstance(name, str) or not name:
            raise _fail(path, where, f"'file_name' must be a non-empty string, got {name!r}")
        position[image_id] = i
        image_ids[i], heights[i], widths[i] = image_id, h, w
        names.append(name.encode("utf-8"))

    anns: Sequence[dict[str, Any]] = data["annotations"]
    t = len(anns)
    owner = np.empty(t, np.int64)
    raw = np.empty((t, 4), np.float64)
    labels = np.empty(t, np.int64)
    crowd = np.zeros(t, np.bool_)
    ann_ids = np.full(t, -1, np.int64)
    for a, ann in enumerate(anns):
        where = f"annotations[{a}]"
        if isinstance(ann, dict) and isinstance(ann.get("id"), int):
            ann_ids[a] = ann["id"]
            where = f"annotations[{a}] (id {ann['id']})"
        image_id = _get(path, ann, "image_id", where)
        if not isinstance(image_id, int) or image_id not in position:
            raise _fail(path, where, f"image_id {image_id!r} is not in 'images'")
        category_id = _get(path, ann, "category_id", where)
        if not isinstance(category_id, int) or category_id not in cat_to_label:
            raise _fail(path, where, f"category_id {category_id!r} is not in 'categories'")
        bbox = _get(path, ann, "bbox", where)
        if (
            not isinstance(bbox, (list, tuple))
            or len(bbox) != 4
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in bbox
            )
        ):
            raise _fail(path, where, f"'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        owner[a] = position[image_id]
        raw[a] = bbox
        labels[a] = cat_to_label[category_id]
        crowd[a] = bool(ann.get("iscrowd", 0))
    del data, anns, images

    has_annotations = np.zeros(n, np.bool_)
    has_annotations[owner] = True
    # [x, y, w, h] pixels -> ltrb clipped to the image, then normalised.
    w_img = widths[owner].astype(np.float64)
    h_img = heights[owner].astype(np.float64)
    ltrb = np.stack([raw[:, 0], raw[:, 1], raw[:, 0] + raw[:, 2], raw[:, 1] + raw[:, 3]], axis=1)
    clipped = np.stack(
        [
            np.clip(ltrb[:, 0], 0, w_img),
            np.clip(ltrb[:, 1], 0, h_img),
            np.clip(ltrb[:, 2], 0, w_img),
            np.clip(ltrb[:, 3], 0, h_img),
        ],
        axis=1,
    )
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    was_clipped = keep & np.any(clipped != ltrb, axis=1)
    dropped = np.flatnonzero(~keep)
    if len(dropped):
        examples = ", ".join(str(ann_ids[d]) for d in dropped[:5])
        log.warning(
            "%s: dropped %d degenerate boxes (zero/negative width or height, or outside the "
            "image; e.g. annotation ids %s)",
            path,
            len(dropped),
            examples,
        )
    if was_clipped.any():
        log.info("%s: clipped %d boxes to their image", path, int(was_clipped.sum()))
    normalised = clipped / np.stack([w_img, h_img, w_img, h_img], axis=1)
    order = np.argsort(owner[keep], kind="stable")  # group by image, file order within
    kept_owner = owner[keep][order]
    box_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(kept_owner, minlength=n), out=box_offsets[1:])
    name_offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(s) for s in names], out=name_offsets[1:])
    return {
        "image_ids": image_ids,
        "heights": heights,
        "widths": widths,
        "name_blob": np.frombuffer(b"".join(names), dtype=np.uint8).copy(),
        "name_offsets": name_offsets,
        "box_offsets": box_offsets,
        "boxes": normalised[keep][order].astype(np.float32),
        "labels": labels[keep][order],
        "iscrowd": crowd[keep][order],
        "has_annotations": has_annotations,
        "categories_json": np.frombuffer(json.dumps(categories).encode("utf-8"), np.uint8).copy(),
        "count_annotations": np.int64(t),
        "count_dropped_degenerate_boxes": np.int64(len(dropped)),
        "count_clipped_boxes": np.int64(was_clipped.sum()),
        "count_images": np.int64(n),
        "count_images_without_annotations": np.int64(n - has_annotations.sum()),
    }


# -------------------------------------------------------------------- cache
def _cache_path(path: Path) -> Path:
    return path.with_name(path.stem + _CACHE_SUFFIX)


@contextlib.contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    """Exclusive lock next to the json while parsing: the ranks of a node starting together
    parse the (multi-GB in memory) json once, the others then read the cache. Best effort:
    without a writable folder or flock support, everyone parses."""
    try:
        fd = os.open(path.with_name(path.stem + ".ssd-index.lock"), os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _cache_key(path: Path) -> np.ndarray:
    st = path.stat()
    return np.array([_CACHE_VERSION, st.st_size, st.st_mtime_ns], dtype=np.int64)


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    cache = _cache_path(path)
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as npz:
            if not np.array_equal(npz["key"], _cache_key(path)):
                return None
            return {k: npz[k] for k in npz.files if k != "key"}
    except Exception as e:  # a stale or damaged cache is rebuilt, never trusted
        log.warning("ignoring unreadable annotation cache %s (%s); re-parsing the json", cache, e)
        return None


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    cache = _cache_path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
    except OSError as e:
        log.info("not caching parsed annotations next to %s (%s)", path, e)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=_cache_key(path), **arrays)
        os.replace(tmp, cache)  # atomic: concurrent ranks never read a half-written cache
    except OSError as e:
        log.info("not caching parsed annotations next to %s (%s)", path, e)
        Path(tmp).unlink(missing_ok=True)
