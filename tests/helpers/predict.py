"""A synthetic val set and a random-init SSD300 exported as ``ssd-train`` exports weights, for
the ``ssd-predict`` tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from ssd_core.model import SSD300
from ssd_data import generate_synthetic_coco
from ssd_train.checkpoint.weights import export_weights


def synthetic_val_set(root: Path, images: int) -> Path:
    """A synthetic COCO-format folder with ``images`` val images (easy, the used categories)."""
    return generate_synthetic_coco(
        root, train_images=0, val_images=images, seed=3, difficulty="easy", categories="used",
        workers=1,
    )  # fmt: skip


def export_random_model(
    dataset: Path, path: Path, topk: int, data: dict[str, Any] | None = None
) -> Path:
    """SSD300 (seed 0, no backbone weights) for ``dataset``'s val categories written to ``path``
    as ``best.pt``-style weights whose settings keep ``topk`` detections per class and image
    (and the ``data`` section, when given)."""
    gt = json.loads((dataset / "annotations" / "instances_val2017.json").read_text())
    num_classes = len(gt["categories"]) + 1
    torch.manual_seed(0)
    model = SSD300(num_classes=num_classes, backbone_weights=None)
    settings: dict[str, Any] = {
        "model": {"num_classes": num_classes, "topk_per_class": topk, "max_detections": topk}
    }
    if data is not None:
        settings["data"] = data
    export_weights(model, path, {"settings": settings, "epoch": 0, "step": 0})
    return path


def good_and_bad_images(
    dataset: Path, folder: Path, bad_name: str, bad: bytes | None
) -> tuple[Path, Path]:
    """(``folder``, the good image): ``folder`` holding ``dataset``'s first val image and one more file ``bad_name`` with the
    bytes ``bad`` (None: a copy of the good image whose header claims 60,000 x 60,000 pixels)."""
    from tests.helpers.datasets import claim_jpeg_size

    folder.mkdir()
    good = sorted((dataset / "val2017").glob("*.jpg"))[0]
    (folder / good.name).write_bytes(good.read_bytes())
    if bad is None:
        bad = claim_jpeg_size(good.read_bytes(), 60_000, 60_000)
    (folder / bad_name).write_bytes(bad)
    return folder, good
