"""Images of what the model sees and predicts: `train_batch.jpg` and `val_predictions.jpg`.

`draw_train_batch` draws an augmented training batch with its ground-truth boxes and class
names (catches augmentation and box-format bugs at a glance); `draw_val_predictions` draws
validation images as pairs, ground truth on the left and predictions on the right. Both write a
JPEG grid built with `torchvision.utils.draw_bounding_boxes` and `make_grid`.

Inputs follow interfaces.md: images uint8 [N, 3, H, W] RGB (any device, channels_last allowed),
boxes float [N, M, 4] ltrb normalised to [0, 1] of the image, labels int64 [N, M] contiguous
with 0 = padding; `class_names[i]` names contiguous label i (index 0, background, is unused).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

GRID_PADDING = 2
BOX_WIDTH = 2


def class_color(label: int) -> tuple[int, int, int]:
    """A bright RGB colour per contiguous label (golden-ratio hue steps: neighbours differ)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def class_name(class_names: Sequence[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class {label}"


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 [N, 3, H, W], got {images.dtype} {list(images.shape)}"
        )


def draw_boxes(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    texts: Sequence[str] | None = None,
) -> Tensor:
    """One image uint8 [3, H, W] with boxes [M, 4] (normalised ltrb) drawn; label 0 rows skipped.

    Each box gets its class colour and the class name (or `texts[j]`) in its top-left corner.
    """
    _, height, width = image.shape
    keep = labels > 0
    boxes, labels = boxes[keep].float(), labels[keep]
    if texts is not None:
        texts = [t for t, k in zip(texts, keep.tolist(), strict=True) if k]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    pixels = (boxes * scale).round().clamp(min=0)  # round: torchvision truncates
    pixels[:, 0::2] = pixels[:, 0::2].clamp(max=width - 1)
    pixels[:, 1::2] = pixels[:, 1::2].clamp(max=height - 1)
    valid = (pixels[:, 2] >= pixels[:, 0]) & (pixels[:, 3] >= pixels[:, 1])
    if not bool(valid.any()):
        return image
    pixels, labels = pixels[valid], labels[valid].tolist()
    if texts is None:
        names = [class_name(class_names, label) for label in labels]
    else:
        names = [t for t, v in zip(texts, valid.tolist(), strict=True) if v]
    return draw_bounding_boxes(
        image,
        pixels,
        labels=names,
        colors=[class_color(label) for label in labels],
        width=BOX_WIDTH,
        fill_labels=True,
        label_colors=[_text_color(class_color(label)) for label in labels],
    )


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light label backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _caption(image: Tensor, text: str) -> Tensor:
    """White text on black in the bottom-left corner of a uint8 [3, H, W] image."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    left, top, right, bottom = draw.textbbox((0, 0), text)
    y = pil.height - (bottom - top) - 4
    draw.rectangle((0, y - 2, right - left + 4, pil.height), fill=(0, 0, 0))
    draw.text((2, y - top), text, fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


def _save_grid(tiles: list[Tensor], columns: int, out_path: Path | str) -> Path:
    grid = make_grid(tiles, nrow=columns, padding=GRID_PADDING, pad_value=255)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(
        out_path, quality=92, subsampling=0
    )  # 4:4:4 keeps thin lines
    return out_path


def grid_columns(tiles: int) -> int:
    """Columns of the near-square grid used for `tiles` images."""
    return max(1, math.ceil(math.sqrt(tiles)))


def draw_train_batch(
    images: Tensor,
    boxes: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    out_path: Path | str,
    max_images: int = 16,
) -> Path:
    """`train_batch.jpg`: the first `max_images` images of a batch with their boxes and names.

    Images uint8 [N, 3, H, W], boxes float [N, M, 4] normalised ltrb, labels int64 [N, M]
    (0 = padding). The grid has ceil(sqrt(n)) columns and 2-pixel white padding.
    """
    _check_images(images)
    n = min(images.shape[0], max_images)
    images, boxes, labels = (t[:n].detach().cpu() for t in (images, boxes, labels))
    tiles = [draw_boxes(images[i].contiguous(), boxes[i], labels[i], class_names) for i in range(n)]
    return _save_grid(tiles, grid_columns(n), out_path)


def draw_val_predictions(
    images: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    counts: Tensor,
    class_names: Sequence[str],
    out_path: Path | str,
    score_threshold: float = 0.3,
    max_images: int = 8,
    max_predictions: int = 30,
) -> Path:
    """`val_predictions.jpg`: per image, ground truth (left) beside predictions (right).

    Images uint8 [N, 3, H, W] (the evaluation input, resized only); gt_boxes float [N, G, 4]
    normalised ltrb, gt_labels int64 [N, G] (0 = padding); detections as `ssd_core`'s
    post-processor returns them: boxes float [N, K, 4] normalised ltrb, scores float [N, K],
    labels int64 [N, K], counts int64 [N]. Predictions scoring below `score_threshold` are not
    drawn, nor more than `max_predictions` per image. Two image pairs per grid row.
    """
    _check_images(images)
    n = min(images.shape[0], max_images)
    tensors = (images, gt_boxes, gt_labels, boxes, scores, labels, counts)
    images, gt_boxes, gt_labels, boxes, scores, labels, counts = (
        t[:n].detach().cpu() for t in tensors
    )
    tiles = []
    for i in range(n):
        image = images[i].contiguous()
        tiles.append(
            _caption(draw_boxes(image, gt_boxes[i], gt_labels[i], class_names), "ground truth")
        )
        k = int(counts[i])
        order = scores[i, :k].argsort(descending=True)[:max_predictions]
        order = order[scores[i, order] >= score_threshold]
        texts = [
            f"{class_name(class_names, int(labels[i, j]))} {float(scores[i, j]):.2f}" for j in order
        ]
        drawn = draw_boxes(image, boxes[i, order], labels[i, order], class_names, texts)
        tiles.append(_caption(drawn, f"predictions >= {score_threshold:.2f}"))
    return _save_grid(tiles, 2 * min(2, n), out_path)
