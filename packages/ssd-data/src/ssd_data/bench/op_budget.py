"""Operations and host syncs per batch of the device input path, counted (not timed).

One batch of the device path is built from the bench images (the workers' part run inline:
bytes and decisions, :class:`~ssd_data.device.samples.DeviceSampleFn`), run once through the
:class:`~ssd_data.device.augment.DeviceAugmenter` to create its per-device constants, and then
counted with :func:`ssd_data.device.op_count.ops_of` on a second run of the same batch (the
steady state). On a GPU every operation is a kernel launch plus Python overhead; a sync stalls
the launching thread, so both must stay flat as the batch grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ssd_data.coco import CocoIndex
from ssd_data.device.augment import DeviceAugmenter
from ssd_data.device.batch import collate_encoded
from ssd_data.device.op_count import OpCount, ops_of
from ssd_data.device.samples import DeviceSampleFn
from ssd_data.samples.loop import AugmentImpl


@dataclass(frozen=True)
class BatchCount:
    """What one steady-state batch of ``batch_size`` images dispatched (``impl`` jitter)."""

    impl: str
    batch_size: int
    ops: int
    syncs: int
    sync_names: dict[str, int]

    def as_json(self) -> dict[str, object]:
        return {
            "impl": self.impl,
            "batch_size": self.batch_size,
            "ops_per_batch": self.ops,
            "syncs_per_batch": self.syncs,
            "sync_ops": self.sync_names,
        }


def count_device_batch(
    root: Path,
    batch_size: int,
    impl: AugmentImpl = "fast",
    max_boxes: int = 128,
    device: torch.device | str = "cpu",
) -> BatchCount:
    """Ops and syncs of the device path's second run of one batch of the first
    ``batch_size`` training images under ``root`` (a COCO-layout folder)."""
    index = CocoIndex.from_json(root / "annotations" / "instances_train2017.json", skip_empty=True)
    if index.num_images < batch_size:
        raise SystemExit(f"ssd-data bench: fewer than {batch_size} images to count a batch")
    fn = DeviceSampleFn(
        index=index, image_dir=root / "train2017", seed=0, max_boxes=max_boxes, impl=impl
    )
    augmenter = DeviceAugmenter(fn, device, impl)
    batch, _ = collate_encoded([fn((0, i, i)) for i in range(batch_size)])
    augmenter(batch)  # first run: per-device constants
    count: OpCount = ops_of(lambda: augmenter(batch))
    return BatchCount(impl, batch_size, count.ops, count.syncs, count.sync_names())
