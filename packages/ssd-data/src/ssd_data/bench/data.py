"""COCO-like JPEGs for ``ssd-data bench``: photo-sized (mostly 640x480), photo-like entropy.

Each image is a smooth colour field with blurred shapes and sensor-like noise, saved at JPEG
quality 90, so decoding costs about what a COCO photo costs (the bench prints the mean file
size; COCO train2017 averages ~160 KB). Annotations: 1..12 boxes per image over COCO's 80
category ids, in a COCO-layout folder (``train2017/``, ``annotations/instances_train2017.json``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# COCO's common sizes, weighted roughly as in train2017 (landscape 640x480 dominates).
SIZES = ((640, 480), (480, 640), (640, 427), (427, 640), (640, 360), (500, 375))
SIZE_WEIGHTS = (0.45, 0.15, 0.2, 0.1, 0.05, 0.05)
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image with gradients, blurred shapes and fine noise (JPEG entropy like a photo)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            rng.uniform(40, 200)
            + rng.uniform(-60, 60) * np.sin(x / rng.uniform(30, 120) + y / rng.uniform(40, 160))
            for _ in range(3)
        ],
        -1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 20))):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        x1, y1 = x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    noise = rng.normal(0, 16, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def write_bench_dataset(root: Path, num_images: int, seed: int = 0, unique: int = 48) -> float:
    """Write ``num_images`` images + annotations under ``root``; returns the mean file size (KB).

    Only ``unique`` distinct pictures are drawn (drawing is slower than decoding); the others are
    byte copies under their own names, sizes and boxes.
    """
    rng = np.random.default_rng(seed)
    image_dir = root / "train2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, total = [], [], 0
    drawn: list[tuple[int, int, bytes]] = []
    for i in range(num_images):
        if i < unique:
            w, h = SIZES[int(rng.choice(len(SIZES), p=SIZE_WEIGHTS))]
            buffer = io.BytesIO()
            photo_like(w, h, rng).save(buffer, format="JPEG", quality=90)
            drawn.append((w, h, buffer.getvalue()))
        w, h, jpeg = drawn[i % len(drawn)]
        name = f"{i:012d}.jpg"
        (image_dir / name).write_bytes(jpeg)
        total += len(jpeg)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for _ in range(int(rng.integers(1, 13))):
            bw, bh = rng.uniform(0.05, 0.7) * w, rng.uniform(0.05, 0.7) * h
            bx, by = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "iscrowd": 0,
                    "area": bw * bh,
                    "category_id": int(rng.choice(COCO_CATEGORY_IDS)),
                    "bbox": [bx, by, bw, bh],
                }
            )
    categories = [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in COCO_CATEGORY_IDS]
    (root / "annotations").mkdir(exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    return total / num_images / 1024
