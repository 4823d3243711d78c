"""Deterministic synthetic COCO-format detection dataset (``ssd-data synth``).

``generate_synthetic_coco(out, train_images=..., val_images=..., seed=...)`` writes COCO 2017's
layout::

    out/train2017/000000000001.jpg ...   (train image ids are odd: 1, 3, 5, ...)
    out/val2017/000000000002.jpg ...     (val image ids are even: 2, 4, 6, ...)
    out/annotations/instances_train2017.json
    out/annotations/instances_val2017.json
    out/synthetic_coco.json              (cache marker: the generation parameters)
    out/.synthetic.lock                  (serialises concurrent calls)

Each image shows drawn objects whose class is visible from shape, texture and colour (see
:mod:`ssd_data.synthetic.presets` for the difficulty levels). The jsons list COCO's real
categories: by default all 80 (``categories="all"``, so a model built for COCO's 81 classes fits
unchanged; categories without objects have no ground truth and COCO evaluation leaves them out of
the mean), or only those the difficulty draws (``categories="used"``). Annotations follow COCO:
``bbox`` [x, y, w, h] in pixels is the visible extent of the object (clipped to the image, shrunk
where another object or an occluder covers it), ``area`` and ``segmentation`` (RLE) are exactly its
visible pixels, crowds are ``iscrowd=1`` groups of tiny objects with uncompressed RLE.

Every image is drawn from its own random generator seeded by ``(seed, split, index)``, so the
output is byte-identical for the same arguments whatever the number of worker processes.
Re-running with the same arguments finds the marker and does nothing.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ssd_data.synthetic.categories import coco_category_dicts
from ssd_data.synthetic.presets import PRESETS, Difficulty, resolve_difficulty
from ssd_data.synthetic.render import render_image

__all__ = ["MARKER_NAME", "PRESETS", "Difficulty", "generate_synthetic_coco", "image_id_for"]

MARKER_NAME = "synthetic_coco.json"
#: Bump when the drawing changes, so that cached datasets are regenerated.
GENERATOR_VERSION = 1
_SPLITS = {"train": 0, "val": 1}
_LAYOUT = ("train2017", "val2017", "annotations")
_CHUNK = 32  # images per worker task


def image_id_for(split: Literal["train", "val"], index: int) -> int:
    """COCO image id of image ``index`` of a split: train 1, 3, 5, ...; val 2, 4, 6, ..."""
    return 2 * index + 1 + _SPLITS[split]


def _render_chunk(
    folder: str, split: str, seed: int, difficulty: Difficulty, indices: Sequence[int]
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    out = []
    for index in indices:
        rng = np.random.default_rng([seed, _SPLITS[split], index])
        image_id = image_id_for(split, index)  # type: ignore[arg-type]
        out.append(render_image(Path(folder) / f"{image_id:012d}.jpg", image_id, difficulty, rng))
    return out


def _chunks(n: int) -> Iterator[range]:
    for start in range(0, n, _CHUNK):
        yield range(start, min(n, start + _CHUNK))


def _parameters(
    train_images: int, val_images: int, seed: int, d: Difficulty, categories: str
) -> dict[str, Any]:
    params = {
        "generator_version": GENERATOR_VERSION,
        "train_images": train_images,
        "val_images": val_images,
        "seed": seed,
        "categories": categories,
        "difficulty": d.to_json(),
    }
    return json.loads(json.dumps(params))  # plain JSON types, comparable with the marker's


def _coco_json(
    split: str, params: dict[str, Any], d: Difficulty, categories: str, records: list[Any]
) -> dict[str, Any]:
    ids = None if categories == "all" else set(d.category_ids)
    return {
        "info": {
            "description": f"Synthetic COCO-format detection dataset ({split}, difficulty "
            f"{d.name!r}, seed {params['seed']}) made by ssd-data synth",
            "url": "",
            "version": f"synthetic-{GENERATOR_VERSION}",
            "year": 2017,
            "contributor": "ssd_data.synthetic.generate",
            "date_created": "2017/09/01",
        },
        "licenses": [
            {
                "url": "https://creativecommons.org/publicdomain/zero/1.0/",
                "id": 1,
                "name": "CC0 1.0",
            }
        ],
        "images": [image for image, _ in records],
        "annotations": [ann for _, anns in records for ann in anns],
        "categories": coco_category_dicts(ids),
    }


def _check_out_dir(out: Path, params: dict[str, Any]) -> bool:
    """True if ``out`` already holds exactly this dataset; clears an older synthetic one."""
    marker = out / MARKER_NAME
    if marker.is_file():
        try:
            old = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old == params and all((out / p).exists() for p in _LAYOUT):
            return True
        marker.unlink()
        for name in _LAYOUT:
            shutil.rmtree(out / name, ignore_errors=True)
        return False
    existing = [name for name in _LAYOUT if (out / name).exists()]
    if existing:
        raise FileExistsError(
            f"{out} already holds {', '.join(existing)} but no {MARKER_NAME} marker, so it is not a "
            "synthetic dataset made by ssd-data synth (it may be real COCO); refusing to overwrite it. "
            "Choose another --out folder or remove those entries."
        )
    return False


def generate_synthetic_coco(
    out: Path | str,
    *,
    train_images: int,
    val_images: int,
    seed: int,
    difficulty: str | Difficulty = "easy",
    categories: Literal["all", "used"] = "all",
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write (or reuse) a synthetic COCO-format dataset under ``out`` and return ``out``.

    Args:
        out: dataset root; created if missing. A root that holds ``train2017``, ``val2017`` or
            ``annotations`` without this generator's marker is refused (FileExistsError).
        train_images, val_images: number of images per split (>= 0).
        seed: the dataset seed; same arguments give byte-identical files.
        difficulty: a preset name (``"easy"``, ``"medium"``, ``"hard"``) or a :class:`Difficulty`.
        categories: ``"all"`` lists COCO's 80 categories in the jsons, ``"used"`` only the ones
            the difficulty draws (both in COCO's order, with COCO's ids).
        workers: processes to draw with; None = min(4, CPUs - 1); 1 (or few images) = in-process.
            The output does not depend on it.
        progress: show a tqdm progress bar.
    """
    if train_images < 0 or val_images < 0:
        raise ValueError(f"image counts must be >= 0, got train {train_images}, val {val_images}")
    if categories not in ("all", "used"):
        raise ValueError(f"categories must be 'all' or 'used', got {categories!r}")
    d = resolve_difficulty(difficulty)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = _parameters(train_images, val_images, seed, d, categories)
    # Concurrent callers (e.g. every rank of a torchrun job) queue here; the first one generates,
    # the others then find the marker.
    with open(out / ".synthetic.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _check_out_dir(out, params):
            _generate(out, params, d, categories, train_images, val_images, seed, workers, progress)
    return out


def _generate(
    out: Path,
    params: dict[str, Any],
    d: Difficulty,
    categories: str,
    train_images: int,
    val_images: int,
    seed: int,
    workers: int | None,
    progress: bool,
) -> None:
    tmp = out / ".synthetic-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "annotations").mkdir(parents=True)
    total = train_images + val_images
    if workers is None:  # leave a core to the rest of the machine (e.g. a training job)
        workers = min(4, (os.cpu_count() or 1) - 1)
    workers = max(1, min(workers, total // _CHUNK))
    from tqdm import tqdm

    bar = tqdm(total=total, desc="synthetic COCO", unit="img", disable=not progress)
    pool = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        if workers > 1
        else None
    )
    try:
        for split, n in (("train", train_images), ("val", val_images)):
            folder = tmp / f"{split}2017"
            folder.mkdir()
            args = (str(folder), split, seed, d)
            if pool is None:
                parts = (_render_chunk(*args, chunk) for chunk in _chunks(n))
            else:
                parts = (
                    pool.map(_render_chunk, *zip(*[(*args, c) for c in _chunks(n)], strict=True))
                    if n
                    else iter(())
                )
            records: list[Any] = []
            for part in parts:
                records.extend(part)
                bar.update(len(part))
            coco = _coco_json(split, params, d, categories, records)
            with open(tmp / "annotations" / f"instances_{split}2017.json", "w") as f:
                json.dump(coco, f, separators=(",", ":"))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    for name in _LAYOUT:
        (tmp / name).rename(out / name)
    tmp.rmdir()
    (out / MARKER_NAME).write_text(json.dumps(params, indent=1) + "\n")
