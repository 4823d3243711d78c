"""Independent transcriptions of the MLPerf reference and random ground truth, for the ssd_core tests.

The ``reference_*`` helpers are straightforward, image-by-image transcriptions of the reference
code (``utils.py`` DefaultBoxes / Encoder, ``base_model.py`` Loss), written here without using
ssd_core, so that ssd_core's batched versions are checked against an independent computation.
"""

from __future__ import annotations

import functools
import itertools
from math import sqrt

import numpy as np
import torch
from torch import Tensor


@functools.cache
def reference_dboxes300() -> tuple[Tensor, Tensor]:
    """Transcription of the reference ``dboxes300_coco()``: (xywh, ltrb), float64 [8732, 4]."""
    fig_size, feat_size = 300, [38, 19, 10, 5, 3, 1]
    steps, scales = [8, 16, 32, 64, 100, 300], [21, 45, 99, 153, 207, 261, 315]
    aspect_ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    fk = fig_size / np.array(steps)
    boxes = []
    for idx, sfeat in enumerate(feat_size):
        sk1 = scales[idx] / fig_size
        sk2 = scales[idx + 1] / fig_size
        sk3 = sqrt(sk1 * sk2)
        all_sizes = [(sk1, sk1), (sk3, sk3)]
        for alpha in aspect_ratios[idx]:
            w, h = sk1 * sqrt(alpha), sk1 / sqrt(alpha)
            all_sizes.append((w, h))
            all_sizes.append((h, w))
        for w, h in all_sizes:
            for i, j in itertools.product(range(sfeat), repeat=2):
                boxes.append(((j + 0.5) / fk[idx], (i + 0.5) / fk[idx], w, h))
    xywh = torch.tensor(boxes)  # float64: the centres are NumPy float64
    xywh.clamp_(min=0, max=1)
    ltrb = xywh.clone()
    ltrb[:, 0] = xywh[:, 0] - 0.5 * xywh[:, 2]
    ltrb[:, 1] = xywh[:, 1] - 0.5 * xywh[:, 3]
    ltrb[:, 2] = xywh[:, 0] + 0.5 * xywh[:, 2]
    ltrb[:, 3] = xywh[:, 1] + 0.5 * xywh[:, 3]
    return xywh, ltrb


def calc_iou_tensor(box1: Tensor, box2: Tensor) -> Tensor:
    """Transcription of the reference IoU: [N, 4] x [M, 4] ltrb -> [N, M]."""
    n, m = box1.size(0), box2.size(0)
    be1 = box1.unsqueeze(1).expand(-1, m, -1)
    be2 = box2.unsqueeze(0).expand(n, -1, -1)
    lt = torch.max(be1[:, :, :2], be2[:, :, :2])
    rb = torch.min(be1[:, :, 2:], be2[:, :, 2:])
    delta = rb - lt
    delta[delta < 0] = 0
    intersect = delta[:, :, 0] * delta[:, :, 1]
    delta1 = be1[:, :, 2:] - be1[:, :, :2]
    area1 = delta1[:, :, 0] * delta1[:, :, 1]
    delta2 = be2[:, :, 2:] - be2[:, :, :2]
    area2 = delta2[:, :, 0] * delta2[:, :, 1]
    return intersect / (area1 + area2 - intersect)


def reference_encode_image(
    boxes: Tensor, labels: Tensor, criteria: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Reference ``Encoder.encode`` + ``Loss._loc_vec`` for one image.

    boxes float32 [M, 4] ltrb (real boxes only), labels int64 [M] -> (offsets float64 [A, 4] with
    the reference's values, also for background anchors, labels int64 [A]).
    """
    dboxes_xywh, dboxes = (t.clone() for t in reference_dboxes300())
    nboxes = dboxes.size(0)
    if (
        boxes.numel() == 0
    ):  # the reference cannot take an empty image; by definition: all background
        bboxes_out = dboxes.clone()
        labels_out = torch.zeros(nboxes, dtype=torch.long)
    else:
        ious = calc_iou_tensor(boxes, dboxes)
        best_dbox_ious, best_dbox_idx = ious.max(dim=0)
        _, best_bbox_idx = ious.max(dim=1)
        best_dbox_ious.index_fill_(0, best_bbox_idx, 2.0)
        idx = torch.arange(0, best_bbox_idx.size(0), dtype=torch.int64)
        for i in idx.tolist():  # the reference's indexed assignment, later index wins
            best_dbox_idx[best_bbox_idx[i]] = i
        masks = best_dbox_ious > criteria
        labels_out = torch.zeros(nboxes, dtype=torch.long)
        labels_out[masks] = labels[best_dbox_idx[masks]]
        bboxes_out = dboxes.clone()
        bboxes_out[masks, :] = boxes[best_dbox_idx[masks], :].to(bboxes_out.dtype)
    x = 0.5 * (bboxes_out[:, 0] + bboxes_out[:, 2])
    y = 0.5 * (bboxes_out[:, 1] + bboxes_out[:, 3])
    w = -bboxes_out[:, 0] + bboxes_out[:, 2]
    h = -bboxes_out[:, 1] + bboxes_out[:, 3]
    gloc = torch.stack((x, y, w, h), dim=1)
    gxy = (1.0 / 0.1) * (gloc[:, :2] - dboxes_xywh[:, :2]) / dboxes_xywh[:, 2:]
    gwh = (1.0 / 0.2) * (gloc[:, 2:] / dboxes_xywh[:, 2:]).log()
    return torch.cat((gxy, gwh), dim=1), labels_out


def random_ground_truth(
    generator: torch.Generator, n: int, m: int, counts: list[int] | None = None
) -> tuple[Tensor, Tensor]:
    """Random padded ground truth: boxes float32 [n, m, 4] ltrb in [0, 1], labels int64 [n, m].

    Image i has ``counts[i]`` real boxes (random if None) at the front, then padding (label 0,
    garbage boxes, so that padding content must not matter).
    """
    cxcy = torch.rand(n, m, 2, generator=generator)
    wh = 0.02 + 0.8 * torch.rand(n, m, 2, generator=generator)
    boxes = torch.cat((cxcy - wh / 2, cxcy + wh / 2), dim=-1).clamp(0, 1)
    labels = torch.randint(1, 81, (n, m), generator=generator)
    if counts is None:
        counts = torch.randint(0, m + 1, (n,), generator=generator).tolist()
    for i, c in enumerate(counts):
        labels[i, c:] = 0
    return boxes.float(), labels


def dboxes300() -> tuple[Tensor, Tensor]:
    """Copies of :func:`reference_dboxes300` (callers may change them)."""
    return tuple(t.clone() for t in reference_dboxes300())  # type: ignore[return-value]


calc_iou = calc_iou_tensor
encode_image = reference_encode_image
