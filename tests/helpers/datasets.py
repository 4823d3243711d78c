"""Tiny handmade COCO-format datasets for the data-pipeline tests (no synthetic generator).

``make_coco(root, ...)`` writes ``root/<split>/*.jpg`` and
``root/annotations/instances_<split>.json`` with small JPEGs (RGB, some grayscale, one CMYK),
categories deliberately NOT sorted by id, a crowd annotation, a degenerate box, and images
without annotations. Everything is derived from ``seed``.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Unsorted ids on purpose: labels follow file order (interfaces.md "Label map").
CATEGORIES = [
    {"id": 7, "name": "seven", "supercategory": "x"},
    {"id": 2, "name": "two", "supercategory": "x"},
    {"id": 40, "name": "forty", "supercategory": "y"},
]


def write_jpeg(
    path: Path, width: int, height: int, rng: np.random.Generator, mode: str = "RGB"
) -> None:
    """A smooth random-colour JPEG of the given size and PIL mode (RGB, L or CMYK)."""
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, 3)
    pixels = np.stack(
        [(base[c] + 80 * np.sin(x / (5 + 3 * c)) + 60 * np.cos(y / 7)) % 256 for c in range(3)], -1
    ).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90)


def make_coco(
    root: Path,
    split: str = "train2017",
    *,
    num_images: int = 24,
    num_empty: int = 2,
    seed: int = 0,
    size_range: tuple[int, int] = (48, 96),
    max_boxes_per_image: int = 4,
) -> tuple[Path, Path]:
    """Write a dataset split; returns (image folder, annotation json path).

    Image ids are 1000 + i in file order; the last ``num_empty`` images have no annotation.
    Image 0 carries a crowd box and image 1 a zero-width box (dropped by the reader).
    """
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    image_dir = root / split
    for i in range(num_images):
        w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
        mode = "L" if i % 5 == 3 else ("CMYK" if i == 4 else "RGB")
        name = f"{i:012d}.jpg"
        write_jpeg(image_dir / name, w, h, rng, mode)
        image_id = 1000 + i
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        if i >= num_images - num_empty:
            continue
        for _ in range(int(rng.integers(1, max_boxes_per_image + 1))):
            bw, bh = rng.uniform(0.1, 0.6) * w, rng.uniform(0.1, 0.6) * h
            bx, by = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORIES[int(rng.integers(len(CATEGORIES)))]["id"],
                    "bbox": [round(bx, 2), round(by, 2), round(bw, 2), round(bh, 2)],
                    "area": round(bw * bh, 2),
                    "iscrowd": 0,
                }
            )
        # image 0: a crowd annotation; image 1: a degenerate (zero-width) box
        special = {0: (2, [1.0, 1.0, 20.0, 20.0], 400.0, 1), 1: (40, [5.0, 5.0, 0.0, 10.0], 0.0, 0)}
        if i in special:
            category, bbox, area, crowd = special[i]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "bbox": bbox, "area": area,
                                "iscrowd": crowd})  # fmt: skip
    ann_path = root / "annotations" / f"instances_{split}.json"
    write_json(ann_path, {"images": images, "annotations": annotations, "categories": CATEGORIES})
    return image_dir, ann_path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


#: image index -> damage done by :func:`damage_images`
BAD = {3: "missing", 6: "truncated", 9: "not_jpeg"}


def damage_images(image_dir: Path) -> dict[str, str]:
    """Damage images 3, 6 and 9 of ``image_dir`` as :data:`BAD` says; file name -> kind."""
    names = {}
    for i, kind in BAD.items():
        path = image_dir / f"{i:012d}.jpg"
        if kind == "missing":
            path.unlink()
        elif kind == "truncated":
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        else:
            path.write_bytes(b"<html>this is not an image</html>")
        names[path.name] = kind
    return names


def claim_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a baseline or progressive JPEG) with its SOF header claiming ``width x height``."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:  # FF C0, length (2), precision (1), height (2), width (2)
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
    raise AssertionError("no SOF0/SOF2 marker")


def claim_png_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a PNG) with its IHDR claiming ``width x height`` (the chunk's CRC recomputed)."""
    start = 8 + 8  # signature, then IHDR's length and type
    ihdr = struct.pack(">II", width, height) + data[start + 8 : start + 13]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return data[:start] + ihdr + crc + data[start + 17 :]
