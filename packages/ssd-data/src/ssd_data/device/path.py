"""Which training-input path a loader takes (``data.augment_device``) and its parts.

- CPU path: :class:`~ssd_data.host.samples.TrainSampleFn` (decode + augment in the loader workers)
  and :class:`~ssd_data.samples.batch.TrainCollate`; the loader yields CPU batches.
- Device path: :class:`~ssd_data.device.samples.DeviceSampleFn` (bytes + decisions in the
  workers), :class:`~ssd_data.device.batch.EncodedCollate` (pinned when CUDA is available and
  ``data.pin_memory``), and a :class:`~ssd_data.device.augment.DeviceAugmenter` that the loader
  applies to every batch (:func:`ssd_data.device.prefetch.device_batches`); the loader yields
  batches already on the device.
- Evaluation (:func:`select_eval_path`): the same choice; on the device path the workers read
  the val bytes (:class:`~ssd_data.device.eval.DeviceEvalSampleFn`) and a
  :class:`~ssd_data.device.eval.DeviceEvalResizer` decodes and resizes them on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ssd_data.coco import CocoIndex
from ssd_data.config import DataConfig
from ssd_data.device.augment import DeviceAugmenter
from ssd_data.device.batch import EncodedCollate
from ssd_data.device.eval import DeviceEvalResizer, DeviceEvalSampleFn, EncodedEvalCollate
from ssd_data.device.samples import DeviceSampleFn
from ssd_data.host.samples import EvalSampleFn, TrainSampleFn
from ssd_data.samples.batch import EvalCollate, TrainCollate


def resolve_augment_device(setting: str, device: torch.device | str) -> torch.device | None:
    """The device the device path runs on, or None for the CPU path.

    ``"auto"``: the device path when ``device`` is a CUDA device, else the CPU path; ``"cuda"``:
    the device path on ``device`` (also when it is the CPU: the device code then runs on CPU
    tensors, which is how it is tested without a GPU); ``"cpu"``: the CPU path.
    """
    dev = torch.device(device)
    if setting == "cpu" or (setting == "auto" and dev.type != "cuda"):
        return None
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def select_train_path(
    cfg: DataConfig, index: CocoIndex, image_dir: Path, seed: int, device: torch.device | str
) -> tuple[Callable[[Any], Any], Callable[[Any], Any], DeviceAugmenter | None]:
    """(map function, collate, device augmenter or None) of the training loader."""
    kwargs: dict[str, Any] = {
        "index": index,
        "image_dir": image_dir,
        "seed": seed,
        "max_boxes": cfg.max_boxes,
        "crop_attempts": cfg.crop_attempts,
        "hue": cfg.hue,
        "impl": cfg.augment_impl,
        "crowd_boxes": cfg.train_crowd_boxes,
        "policy": cfg.bad_image_policy,
        "max_pixels": cfg.max_image_pixels,
    }
    target = resolve_augment_device(cfg.augment_device, device)
    if target is None:
        return TrainSampleFn(**kwargs), TrainCollate(cfg.channels_last), None
    map_fn = DeviceSampleFn(**kwargs)
    pin = cfg.pin_memory and torch.cuda.is_available()
    augmenter = DeviceAugmenter(map_fn, target, cfg.augment_impl, cfg.channels_last)
    return map_fn, EncodedCollate(pin), augmenter


def select_eval_path(
    cfg: DataConfig, index: CocoIndex, image_dir: Path, device: torch.device | str
) -> tuple[Callable[[Any], Any], Callable[[Any], Any], DeviceEvalResizer | None]:
    """(map function, collate, device resizer or None) of the evaluation loader: with the
    device path, the workers read the val bytes and the device decodes and resizes them
    (:mod:`ssd_data.device.eval`); otherwise PIL in the workers."""
    target = resolve_augment_device(cfg.augment_device, device)
    if target is None:
        map_fn = EvalSampleFn(
            index=index,
            image_dir=image_dir,
            impl=cfg.augment_impl,
            policy=cfg.bad_image_policy,
            max_pixels=cfg.max_image_pixels,
        )
        return map_fn, EvalCollate(cfg.channels_last), None
    device_fn = DeviceEvalSampleFn(
        index, image_dir, cfg.augment_impl, cfg.bad_image_policy, cfg.max_image_pixels
    )
    pin = cfg.pin_memory and torch.cuda.is_available()
    resizer = DeviceEvalResizer(
        target, cfg.augment_impl, cfg.channels_last, cfg.bad_image_policy, index.path
    )
    return device_fn, EncodedEvalCollate(pin), resizer
