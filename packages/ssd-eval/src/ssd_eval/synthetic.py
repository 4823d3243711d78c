"""COCO-like synthetic ground truth and detections, for `ssd-eval bench` and the tests.

Ground truth mimics val2017: image sizes around 640x480, ~7.3 boxes per image (geometric count),
box areas split ~41% small / 34% medium / 25% large, ~1% crowd regions, a few images without
annotations, 80 categories with COCO's non-contiguous ids. Detections mimic a trained detector's
output: jittered copies of the ground-truth boxes (some with the wrong class) scored higher, plus
random false positives, up to `per_image` per image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
"""The 80 category ids of COCO 2017 (1..90 with ten gaps)."""

_IMAGE_SIZES = np.array([(480, 640), (427, 640), (640, 480), (640, 427), (375, 500), (640, 640)])
_AREA_CLASS_P = (0.41, 0.34, 0.25)
_AREA_BOUNDS = ((4.0**2, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 400.0**2))


def _boxes(rng: np.random.Generator, n: int, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """n xywh boxes inside images of the given sizes, COCO-like area classes. float64 [n, 4]."""
    area_class = rng.choice(3, size=n, p=_AREA_CLASS_P)
    low = np.array([b[0] for b in _AREA_BOUNDS])[area_class]
    high = np.array([b[1] for b in _AREA_BOUNDS])[area_class]
    area = np.exp(rng.uniform(np.log(low), np.log(high)))
    aspect = np.exp(rng.uniform(np.log(0.33), np.log(3.0), size=n))
    w = np.minimum(np.sqrt(area * aspect), widths - 1.0)
    h = np.minimum(area / np.maximum(w, 1e-3), heights - 1.0)
    x = rng.uniform(0.0, widths - w)
    y = rng.uniform(0.0, heights - h)
    return np.stack([x, y, w, h], axis=1)


def make_ground_truth(
    num_images: int,
    *,
    seed: int = 0,
    mean_boxes: float = 7.3,
    num_categories: int = 80,
    crowd_fraction: float = 0.01,
    empty_fraction: float = 0.01,
    absent_categories: int = 0,
    shuffle_categories: bool = False,
) -> dict[str, Any]:
    """A COCO instances json (dict) with `num_images` images.

    absent_categories: the last this-many categories get no annotations.
    shuffle_categories: list the categories in random order (not sorted by id).
    """
    rng = np.random.default_rng(seed)
    category_ids = (
        COCO_CATEGORY_IDS[:num_categories]
        if num_categories <= len(COCO_CATEGORY_IDS)
        else list(range(1, num_categories + 1))
    )
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in category_ids]
    used = np.asarray(category_ids[: max(1, num_categories - absent_categories)])
    if shuffle_categories:
        categories = [categories[i] for i in rng.permutation(len(categories))]
    sizes = _IMAGE_SIZES[rng.integers(0, len(_IMAGE_SIZES), size=num_images)]
    images = [
        {
            "id": 100 + 3 * i,
            "file_name": f"{100 + 3 * i:012d}.jpg",
            "height": int(h),
            "width": int(w),
        }
        for i, (h, w) in enumerate(sizes)
    ]
    counts = rng.geometric(1.0 / mean_boxes, size=num_images)
    counts[rng.random(num_images) < empty_fraction] = 0
    owner = np.repeat(np.arange(num_images), counts)
    boxes = _boxes(rng, owner.size, sizes[owner, 0].astype(float), sizes[owner, 1].astype(float))
    crowd = rng.random(owner.size) < crowd_fraction
    cats = rng.choice(used, size=owner.size)
    annotations = [
        {
            "id": k + 1,
            "image_id": images[i]["id"],
            "category_id": int(c),
            "bbox": [round(float(v), 2) for v in box],
            "area": round(float(box[2] * box[3]) * float(rng.uniform(0.6, 1.0)), 2),
            "iscrowd": int(is_crowd),
            "segmentation": [],
        }
        for k, (i, c, box, is_crowd) in enumerate(zip(owner, cats, boxes, crowd, strict=True))
    ]
    return {
        "info": {"description": "ssd_eval synthetic COCO-like ground truth", "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def make_detections(
    gt: dict[str, Any],
    *,
    seed: int = 0,
    per_image: int = 200,
    no_detection_fraction: float = 0.0,
    duplicate_fraction: float = 0.0,
    wrong_class_fraction: float = 0.1,
) -> np.ndarray:
    """Detections for `gt` as rows float64 [R, 7] (image_id, x, y, w, h, score, category_id).

    Every image gets `per_image` detections (fewer if per_image is small), except a
    `no_detection_fraction` of images that get none; `duplicate_fraction` of the detections are
    exact copies (same box and score) of another detection of the same image.
    """
    rng = np.random.default_rng(seed + 1_000_003)
    images = gt["images"]
    image_ids = np.asarray([im["id"] for im in images], dtype=np.int64)
    heights = np.asarray([im["height"] for im in images], dtype=np.float64)
    widths = np.asarray([im["width"] for im in images], dtype=np.float64)
    category_ids = np.asarray([c["id"] for c in gt["categories"]], dtype=np.int64)
    position = {int(i): k for k, i in enumerate(image_ids)}
    anns = gt["annotations"]
    ann_image = np.asarray([position[a["image_id"]] for a in anns], dtype=np.int64)
    ann_box = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    ann_cat = np.asarray([a["category_id"] for a in anns], dtype=np.int64)

    # True-positive candidates: 1-3 jittered copies of each ground-truth box.
    copies = rng.integers(1, 4, size=len(anns))
    src = np.repeat(np.arange(len(anns)), copies)
    jitter = rng.normal(0.0, rng.choice([0.03, 0.1, 0.25], size=(src.size, 1)), size=(src.size, 4))
    tp_box = ann_box[src] + jitter * np.repeat(ann_box[src, 2:], 2, axis=1)
    tp_box[:, 2:] = np.abs(tp_box[:, 2:]) + 0.5
    tp_cat = ann_cat[src].copy()
    wrong = rng.random(src.size) < wrong_class_fraction
    tp_cat[wrong] = rng.choice(category_ids, size=int(wrong.sum()))
    tp_image = ann_image[src]
    tp_score = rng.beta(5, 2, size=src.size)

    # False positives fill each image up to per_image.
    tp_per_image = np.bincount(tp_image, minlength=len(images))
    fp_per_image = np.maximum(per_image - tp_per_image, 0)
    fp_image = np.repeat(np.arange(len(images)), fp_per_image)
    fp_box = _boxes(rng, fp_image.size, heights[fp_image], widths[fp_image])
    fp_cat = rng.choice(category_ids, size=fp_image.size)
    fp_score = rng.beta(1.2, 6, size=fp_image.size)

    image = np.concatenate([tp_image, fp_image])
    rows = np.concatenate(
        [
            image_ids[image][:, None].astype(np.float64),
            np.concatenate([tp_box, fp_box]),
            np.round(np.concatenate([tp_score, fp_score]), 4)[:, None],
            np.concatenate([tp_cat, fp_cat])[:, None].astype(np.float64),
        ],
        axis=1,
    )
    # Keep at most per_image per image (highest scores first, like a detector's top-k).
    order = np.lexsort((-rows[:, 5], image))
    rows, image = rows[order], image[order]
    rank_in_image = np.arange(image.size) - np.searchsorted(image, image)
    keep = rank_in_image < per_image
    keep &= ~np.isin(image, np.flatnonzero(rng.random(len(images)) < no_detection_fraction))
    rows, image = rows[keep], image[keep]
    if duplicate_fraction > 0 and rows.shape[0]:
        dup = np.flatnonzero(rng.random(rows.shape[0]) < duplicate_fraction)
        rows = np.concatenate([rows, rows[dup]])
        image = np.concatenate([image, image[dup]])
        rows = rows[np.argsort(image, kind="stable")]
    return rows
