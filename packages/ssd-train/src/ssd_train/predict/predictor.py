"""Run exported weights on image files: evaluation preprocessing, model, post-processing, outputs.

Per batch of files: each image is read and resized to uint8 [300, 300, 3] by
``ssd_data.host.augment.resize_eval`` (the evaluation loader's function), the batch goes through
``ssd_core.preprocess.forward_normalized`` (normalise, channels_last, autocast, forward) and
``ssd_core.postprocess.PostProcessor`` (decode + NMS, built from the weights' model settings with
the requested score threshold), and ``ssd_eval.tensor_detections.to_coco_rows`` turns the
detections into COCO rows in original-image pixels. Each image is drawn with
``ssd_train.report.drawing.draw_boxes`` at its full resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ssd_core import ModelConfig, PostProcessor, forward_normalized
from ssd_core.build import build_postprocessor as postprocessor_of
from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS
from ssd_data.host.augment import resize_eval
from ssd_data.host.decode import UnreadableImage, load_rgb, open_image, rgb_array
from ssd_eval.tensor_detections import LookupTables, pack_batch, to_coco_rows
from torch import nn

from ssd_train.predict.sources import LabelMap
from ssd_train.report.drawing import draw_boxes
from ssd_train.resilience.environment import write_failure


@dataclass
class PredictResult:
    """What a prediction run produced."""

    records: list[dict[str, Any]] = field(default_factory=list)
    images_done: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    drawn: list[Path] = field(default_factory=list)


def build_postprocessor(metadata: dict[str, Any], score_threshold: float) -> PostProcessor:
    """The weights' post-processing settings (``settings.model``) with ``score_threshold``."""
    model_settings = dict((metadata.get("settings") or {}).get("model") or {})
    known = set(ModelConfig.model_fields)
    try:
        cfg = ModelConfig.model_validate({k: v for k, v in model_settings.items() if k in known})
    except ValueError:  # settings of another version: the defaults
        cfg = ModelConfig()
    return postprocessor_of(cfg.model_copy(update={"score_threshold": score_threshold}))


def _read(
    path: Path, impl: str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, np.ndarray] | str:
    """(resized uint8 [300, 300, 3], full-size uint8 [H, W, 3]) or the reason it is unreadable
    (also: a header declaring more than ``max_pixels`` pixels)."""
    try:
        resized, _ = resize_eval(path, impl=impl, max_pixels=max_pixels)  # type: ignore[arg-type]
        with open_image(path, max_pixels) as image:
            full = rgb_array(load_rgb(image, path)).copy()
    except UnreadableImage as e:
        return e.reason
    return resized, full


def output_names(paths: Sequence[Path]) -> list[str]:
    """Drawn-image file names: the source's name (``.png`` kept, everything else ``.jpg``), with
    ``-<index>`` added when two sources share a name."""
    names: list[str] = []
    seen: set[str] = set()
    for i, path in enumerate(paths):
        suffix = ".png" if path.suffix.lower() == ".png" else ".jpg"
        name = f"{path.stem}{suffix}"
        if name in seen:
            name = f"{path.stem}-{i}{suffix}"
        seen.add(name)
        names.append(name)
    return names


def _save(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    try:
        if path.suffix == ".png":
            pil.save(path)
        else:
            pil.save(path, quality=92, subsampling=0)
    except OSError as error:
        failure = write_failure(path, error, what="drawn image")
        if failure is None:
            raise
        raise failure from error


def predict_files(
    model: nn.Module,
    postprocessor: PostProcessor,
    labels: LabelMap,
    paths: Sequence[Path],
    image_ids: Sequence[int],
    out_dir: Path | None,
    *,
    device: torch.device,
    batch_size: int = 8,
    autocast_dtype: torch.dtype | None = None,
    resize_impl: str = "fast",
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    workers: int = 4,
    draw: bool = True,
    max_drawn: int = 100,
    progress: Callable[[int], None] | None = None,
) -> PredictResult:
    """Detect objects in ``paths``; returns COCO records (with ``file_name``) and drawn files.

    Args:
        model: SSD300 in eval mode on ``device`` returning loc [N, 8732, 4], logits [N, 8732, C].
        postprocessor: decode + NMS; its ``score_threshold`` decides what is kept.
        labels: class names and COCO category ids per contiguous label.
        paths, image_ids: the files and their (unique) ids.
        out_dir: where drawn images go (None or ``draw=False``: none drawn).
        max_pixels: images whose header declares more pixels are skipped as unreadable.
        max_drawn: boxes drawn per image at most (the best-scoring ones).
        progress: called with the number of files finished after each batch.
    """
    result = PredictResult()
    names = output_names(paths)
    category_ids = torch.tensor(labels.category_ids, dtype=torch.float64)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = list(range(start, min(start + batch_size, len(paths))))
            loaded = list(pool.map(lambda i: _read(paths[i], resize_impl, max_pixels), chunk))
            good = [(i, r) for i, r in zip(chunk, loaded, strict=True) if not isinstance(r, str)]
            result.skipped += [
                (paths[i], r) for i, r in zip(chunk, loaded, strict=True) if isinstance(r, str)
            ]
            if good:
                _predict_batch(
                    model,
                    postprocessor,
                    labels,
                    good,
                    paths,
                    image_ids,
                    names,
                    category_ids,
                    out_dir if draw else None,
                    device,
                    autocast_dtype,
                    max_drawn,
                    result,
                )
            if progress is not None:
                progress(len(chunk))
    return result


@torch.no_grad()
def _predict_batch(
    model: nn.Module,
    postprocessor: PostProcessor,
    labels: LabelMap,
    good: list[tuple[int, tuple[np.ndarray, np.ndarray]]],
    paths: Sequence[Path],
    image_ids: Sequence[int],
    names: Sequence[str],
    category_ids: torch.Tensor,
    out_dir: Path | None,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    max_drawn: int,
    result: PredictResult,
) -> None:
    resized = np.stack([r[0] for _, r in good])  # [N, 300, 300, 3]
    images = torch.from_numpy(resized).to(device).permute(0, 3, 1, 2)  # uint8 [N, 3, 300, 300]
    loc, logits = forward_normalized(
        model, images, autocast_dtype, channels_last=device.type == "cuda"
    )
    dets = postprocessor(loc, logits)
    ids = torch.tensor([image_ids[i] for i, _ in good], dtype=torch.int64)
    order = ids.argsort()
    heights = torch.tensor([r[1].shape[0] for _, r in good], dtype=torch.float64)
    widths = torch.tensor([r[1].shape[1] for _, r in good], dtype=torch.float64)
    tables = LookupTables(ids[order], heights[order], widths[order], category_ids)
    boxes, scores, det_labels, counts = (t.cpu() for t in dets)
    packed = pack_batch(ids, boxes, scores, det_labels)
    rows = to_coco_rows(packed, counts, tables).tolist()  # [R, 7], image order kept
    file_of = {image_ids[i]: paths[i].name for i, _ in good}
    for image_id, x, y, w, h, score, category in rows:
        result.records.append(
            {
                "image_id": int(image_id),
                "category_id": int(category),
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "score": round(score, 5),
                "file_name": file_of[int(image_id)],
            }
        )
    result.images_done += len(good)
    if out_dir is None:
        return
    for row, (i, (_, full)) in enumerate(good):
        k = min(int(counts[row]), max_drawn)  # scores are descending: the best k
        texts = [
            f"{labels.names[int(lab)] if 0 <= int(lab) < labels.num_classes else lab} {float(s):.2f}"
            for lab, s in zip(det_labels[row, :k], scores[row, :k], strict=True)
        ]
        image = torch.from_numpy(full).permute(2, 0, 1).contiguous()
        drawn = draw_boxes(image, boxes[row, :k], det_labels[row, :k], labels.names, texts)
        target = out_dir / names[i]
        _save(drawn, target)
        result.drawn.append(target)
