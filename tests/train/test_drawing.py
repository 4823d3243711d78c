"""train_batch.jpg / val_predictions.jpg: grid size, and boxes drawn where they belong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ssd_train.report.drawing import class_color, draw_train_batch, draw_val_predictions

H = W = 300
PAD = 2
NAMES = ["background", "circle", "square", "triangle"]


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def cell_origin(index: int, columns: int) -> tuple[int, int]:
    """(x, y) of a tile's top-left pixel in a make_grid grid with 2-pixel padding."""
    row, col = divmod(index, columns)
    return col * (W + PAD) + PAD, row * (H + PAD) + PAD


def near(pixel: np.ndarray, rgb: tuple[int, int, int], tol: int = 45) -> bool:
    return bool(np.all(np.abs(pixel - np.array(rgb)) <= tol))


def test_train_batch_grid_and_box_positions(tmp_path: Path) -> None:
    n, m = 5, 3
    images = torch.zeros(n, 3, H, W, dtype=torch.uint8)
    boxes = torch.zeros(n, m, 4)
    labels = torch.zeros(n, m, dtype=torch.int64)
    # image 4: a "square" (label 2) at x 60..180, y 90..240 pixels; the other rows are padding
    boxes[4, 0] = torch.tensor([0.2, 0.3, 0.6, 0.8])
    labels[4, 0] = 2
    boxes[4, 1] = torch.tensor([0.0, 0.0, 0.1, 0.1])  # label 0: padding, must not be drawn
    out = draw_train_batch(images, boxes, labels, NAMES, tmp_path / "train_batch.jpg")
    assert out == tmp_path / "train_batch.jpg"
    img = load(out)
    # 5 images -> 3 columns, 2 rows
    assert img.shape == (2 * (H + PAD) + PAD, 3 * (W + PAD) + PAD, 3)
    x0, y0 = cell_origin(4, 3)
    color = class_color(2)
    assert near(img[y0 + 165, x0 + 60], color)  # left edge, halfway down
    assert near(img[y0 + 165, x0 + 179], color)  # right edge (2-pixel line ends at x 180)
    assert near(img[y0 + 239, x0 + 120], color)  # bottom edge
    assert near(img[y0 + 165, x0 + 120], (0, 0, 0))  # inside: not filled
    assert near(img[y0 + 15, x0 + 15], (0, 0, 0))  # where the padding row's box would be
    # image 0 has no boxes: still black, and the padding between tiles is white
    x0, y0 = cell_origin(0, 3)
    assert near(img[y0 + 150, x0 + 150], (0, 0, 0))
    assert near(img[y0 + 150, x0 + W], (255, 255, 255))
    # the class name is written in the top-left corner of the box (text pixels differ from fill)
    x0, y0 = cell_origin(4, 3)
    label_area = img[y0 + 93 : y0 + 103, x0 + 63 : x0 + 90]
    assert len({tuple(p) for p in label_area.reshape(-1, 3) // 64}) > 1


def test_val_predictions_side_by_side(tmp_path: Path) -> None:
    n, g, k = 2, 2, 4
    images = torch.full((n, 3, H, W), 40, dtype=torch.uint8)
    gt_boxes = torch.zeros(n, g, 4)
    gt_labels = torch.zeros(n, g, dtype=torch.int64)
    gt_boxes[1, 0] = torch.tensor([0.1, 0.1, 0.5, 0.5])  # x,y 30..150
    gt_labels[1, 0] = 1
    boxes = torch.zeros(n, k, 4)
    scores = torch.zeros(n, k)
    labels = torch.zeros(n, k, dtype=torch.int64)
    counts = torch.tensor([0, 2])
    boxes[1, 0] = torch.tensor([0.5, 0.5, 0.9, 0.9])  # confident "triangle" at 150..270
    scores[1, 0], labels[1, 0] = 0.9, 3
    boxes[1, 1] = torch.tensor([0.6, 0.1, 0.9, 0.3])  # below the 0.3 threshold: not drawn
    scores[1, 1], labels[1, 1] = 0.1, 2
    out = draw_val_predictions(
        images, gt_boxes, gt_labels, boxes, scores, labels, counts, NAMES,
        tmp_path / "val_predictions.jpg",
    )  # fmt: skip
    img = load(out)
    # 2 images -> 4 tiles in one row: [gt 0, pred 0, gt 1, pred 1]
    assert img.shape == (H + 2 * PAD, 4 * (W + PAD) + PAD, 3)
    gx, gy = cell_origin(2, 4)
    px, py = cell_origin(3, 4)
    assert near(img[gy + 90, gx + 30], class_color(1))  # ground truth on the left
    assert near(img[py + 90, px + 30], (40, 40, 40))  # not on the prediction side
    assert near(img[py + 210, px + 269], class_color(3))  # prediction on the right
    assert near(img[gy + 210, gx + 270], (40, 40, 40))
    assert near(img[py + 20, px + 270], (40, 40, 40))  # low-score box not drawn
    # image 0 has no boxes at all
    x0, y0 = cell_origin(1, 4)
    assert near(img[y0 + 150, x0 + 150], (40, 40, 40))


def test_bad_images_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"uint8 \[N, 3, H, W\]"):
        draw_train_batch(
            torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 4), torch.zeros(1, 1, dtype=torch.int64),
            NAMES, tmp_path / "x.jpg",
        )  # fmt: skip
