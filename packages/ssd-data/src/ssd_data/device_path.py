"""Which training-input path a loader takes (``data.augment_device``) and its parts.

- CPU path: :class:`~ssd_data.samples.TrainSampleFn` (decode + augment in the loader workers)
  and :class:`~ssd_data.batch.TrainCollate`; the loader yields CPU batches.
- Device path: :class:`~ssd_data.device_samples.DeviceSampleFn` (bytes + decisions in the
  workers), :class:`~ssd_data.device_batch.EncodedCollate` (pinned when CUDA is available and
  ``data.pin_memory``), and a :class:`~ssd_data.device_augment.DeviceAugmenter` that the loader
  applies to every batch (:func:`ssd_data.device_prefetch.device_batches`); the loader yields
  batches already on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ssd_data.batch import TrainCollate
from ssd_data.coco import CocoIndex
from ssd_data.config import DataConfig
from ssd_data.device_augment import DeviceAugmenter
from ssd_data.device_batch import EncodedCollate
from ssd_data.device_samples import DeviceSampleFn
from ssd_data.samples import TrainSampleFn


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
