"""Post-processed detection tensors -> COCO detection rows, on the device, with checks.

Input per batch (interfaces.md, "Detections"): image_ids int64 [N], boxes float [N, K, 4]
normalised ltrb, scores float [N, K], labels int64 [N, K] contiguous (1..C-1), counts int64 [N]
(valid entries per image; rows >= count are padding). Output rows are float64 [R, 7]
(image_id, x, y, w, h, score, category_id) with xywh in original-image pixels, the sizes taken
from the ground-truth json and the category ids from the inverse label map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssd_eval.groundtruth import GroundTruth

RAW_COLUMNS = ("image_id", "left", "top", "right", "bottom", "score", "label")


class TensorDetectionsError(ValueError):
    """Detection tensors passed to the evaluator are malformed or do not fit the ground truth."""


@dataclass(frozen=True)
class LookupTables:
    """Ground-truth lookup tensors on one device.

    image_ids: int64 [I] sorted; heights, widths: float64 [I]; category_ids: float64 [C]
    (index = contiguous label, index 0 unused).
    """

    image_ids: torch.Tensor
    heights: torch.Tensor
    widths: torch.Tensor
    category_ids: torch.Tensor

    @classmethod
    def from_ground_truth(
        cls, gt: GroundTruth, label_to_category_id: np.ndarray, device: torch.device
    ) -> LookupTables:
        """Tables of ``gt`` and the label map int64 [C] (``check_label_map``'s output)."""
        return cls(
            image_ids=torch.as_tensor(gt.image_ids, dtype=torch.int64, device=device),
            heights=torch.as_tensor(gt.heights, dtype=torch.float64, device=device),
            widths=torch.as_tensor(gt.widths, dtype=torch.float64, device=device),
            category_ids=torch.as_tensor(label_to_category_id, dtype=torch.float64, device=device),
        )


def check_batch_shapes(
    image_ids: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    counts: torch.Tensor,
) -> None:
    """Raise TensorDetectionsError unless the shapes and dtypes fit (no device sync)."""
    if image_ids.ndim != 1:
        raise TensorDetectionsError(f"image_ids must be [N], got shape {tuple(image_ids.shape)}")
    n = image_ids.shape[0]
    if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
        raise TensorDetectionsError(f"boxes must be [N={n}, K, 4], got {tuple(boxes.shape)}")
    k = boxes.shape[1]
    for name, tensor in (("scores", scores), ("labels", labels)):
        if tuple(tensor.shape) != (n, k):
            raise TensorDetectionsError(f"{name} must be [N={n}, K={k}], got {tuple(tensor.shape)}")
    if tuple(counts.shape) != (n,):
        raise TensorDetectionsError(f"counts must be [N={n}], got {tuple(counts.shape)}")
    if not (boxes.is_floating_point() and scores.is_floating_point()):
        raise TensorDetectionsError(
            f"boxes and scores must be floating point, got {boxes.dtype} and {scores.dtype}"
        )
    for name, tensor in (("image_ids", image_ids), ("labels", labels), ("counts", counts)):
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise TensorDetectionsError(f"{name} must be an integer tensor, got {tensor.dtype}")


def pack_batch(
    image_ids: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """One batch -> float64 [N, K, 7] with RAW_COLUMNS, on the input's device (no sync)."""
    n, k = scores.shape
    return torch.cat(
        [
            image_ids.detach().to(torch.float64).view(n, 1, 1).expand(n, k, 1),
            boxes.detach().to(torch.float64),
            scores.detach().to(torch.float64).unsqueeze(-1),
            labels.detach().to(torch.float64).unsqueeze(-1),
        ],
        dim=-1,
    )


def concat_batches(
    packed: list[torch.Tensor], counts: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches -> (packed float64 [N_total, K_max, 7], counts int64 [N_total]) on `device`."""
    if not packed:
        return torch.zeros((0, 1, 7), dtype=torch.float64, device=device), torch.zeros(
            0, dtype=torch.int64, device=device
        )
    k_max = max(p.shape[1] for p in packed)
    parts = []
    for p in packed:
        p = p.to(device)
        if p.shape[1] < k_max:  # a batch with fewer slots: pad with invalid (beyond count) rows
            p = torch.cat([p, p.new_zeros((p.shape[0], k_max - p.shape[1], 7))], dim=1)
        parts.append(p)
    return torch.cat(parts), torch.cat([c.to(device, torch.int64) for c in counts])


def _first_problem(
    packed: torch.Tensor,
    counts: torch.Tensor,
    raw: torch.Tensor,
    known: torch.Tensor,
    num_classes: int,
) -> tuple[str, int] | None:
    """(kind, index) of the first problem: kind "count" indexes images, others index raw rows."""
    k = packed.shape[1]
    labels = raw[:, 6]
    checks = {
        "count": (counts < 0) | (counts > k),
        "finite": ~torch.isfinite(raw).all(dim=1),
        "label": (labels < 1) | (labels > num_classes - 1) | (labels != labels.round()),
        "image": ~known,
        "size": (raw[:, 3] < raw[:, 1]) | (raw[:, 4] < raw[:, 2]),
    }
    flags = torch.stack([c.any() for c in checks.values()]).cpu().tolist()  # the one sync
    for (kind, bad), flagged in zip(checks.items(), flags, strict=True):
        if flagged:
            return kind, int(torch.nonzero(bad)[0, 0].item())
    return None


_REASONS = {
    "finite": "a value is not finite",
    "label": "label is outside 1..C-1 (C = {num_classes}: entries of the label map)",
    "image": "image_id is not in the ground truth",
    "size": "the box has right < left or bottom < top (negative size)",
}


def to_coco_rows(
    packed: torch.Tensor, counts: torch.Tensor, tables: LookupTables, rank: int = 0
) -> torch.Tensor:
    """Valid detections -> COCO rows float64 [R, 7] on packed's device; checks every value.

    Raises TensorDetectionsError naming the first bad detection (rank, position, content).
    """
    k = packed.shape[1]
    counts_clamped = counts.clamp(0, k)
    valid = torch.arange(k, device=packed.device).unsqueeze(0) < counts_clamped.unsqueeze(1)
    positions = torch.nonzero(valid)  # [R, 2] (image index, slot), row-major order
    raw = packed[positions[:, 0], positions[:, 1]]  # [R, 7]
    image_ids = raw[:, 0].to(torch.int64)
    index = torch.searchsorted(tables.image_ids, image_ids).clamp(max=tables.image_ids.numel() - 1)
    if tables.image_ids.numel() == 0:
        known = torch.zeros_like(image_ids, dtype=torch.bool)
    else:
        known = tables.image_ids[index] == image_ids
    num_classes = tables.category_ids.numel()
    problem = _first_problem(packed, counts, raw, known, num_classes)
    if problem is not None:
        kind, at = problem
        if kind == "count":
            raise TensorDetectionsError(
                f"rank {rank}, image #{at} added (image_id={int(packed[at, 0, 0].item())}): "
                f"count {int(counts[at].item())} is outside 0..K={k}"
            )
        image_index, slot = (int(v) for v in positions[at].tolist())
        values = raw[at].tolist()
        raise TensorDetectionsError(
            f"rank {rank}, image #{image_index} added (image_id={values[0]:.0f}), detection {slot}: "
            f"box ltrb={values[1:5]}, score={values[5]}, label={values[6]}: "
            + _REASONS[kind].format(num_classes=num_classes)
        )
    heights, widths = tables.heights[index], tables.widths[index]
    left, top, right, bottom = raw[:, 1], raw[:, 2], raw[:, 3], raw[:, 4]
    category = tables.category_ids[raw[:, 6].to(torch.int64)]
    return torch.stack(
        [
            raw[:, 0],
            left * widths,
            top * heights,
            (right - left) * widths,
            (bottom - top) * heights,
            raw[:, 5],
            category,
        ],
        dim=1,
    )
