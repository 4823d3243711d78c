"""``--mode benchmark``: time the training step on synthetic device tensors (no dataset needed).

Builds the same model, optimiser and :class:`ssd_train.train_step.TrainStep` as training, runs
``benchmark.warmup_steps`` untimed steps (compilation, allocator warm-up) then
``benchmark.timed_steps`` timed ones on one fixed batch already on the device, and reports
images per second over all ranks (global batch x steps / seconds, synchronised at both ends).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ssd_train.components import build_components
from ssd_train.distributed import (
    barrier,
    broadcast_seed,
    destroy,
    init_distributed,
    seed_everything,
)
from ssd_train.lr_schedule import base_learning_rate
from ssd_train.settings import Settings


class SyntheticBatch(NamedTuple):
    """A ``TrainBatch``-shaped batch: images uint8 [N,3,300,300] (channels_last), boxes float32
    [N,M,4] ltrb in [0,1], labels int64 [N,M] (0 = padding), image_ids int64 [N]."""

    images: Tensor
    boxes: Tensor
    labels: Tensor
    image_ids: Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> SyntheticBatch:
        return SyntheticBatch(
            *(
                t.to(device, non_blocking=non_blocking)
                for t in (self.images, self.boxes, self.labels, self.image_ids)
            )
        )


def synthetic_batch(
    batch_size: int,
    max_boxes: int,
    num_classes: int,
    device: torch.device,
    *,
    boxes_per_image: int = 8,
    seed: int = 0,
) -> SyntheticBatch:
    """Random images and ``boxes_per_image`` random valid boxes per image (the rest padding)."""
    g = torch.Generator().manual_seed(seed)
    n, m, k = batch_size, max_boxes, min(boxes_per_image, max_boxes)
    images = torch.randint(0, 256, (n, 3, 300, 300), dtype=torch.uint8, generator=g)
    images = images.contiguous(memory_format=torch.channels_last)
    centre = torch.rand(n, k, 2, generator=g) * 0.6 + 0.2
    size = torch.rand(n, k, 2, generator=g) * 0.3 + 0.05
    boxes = torch.zeros(n, m, 4)
    boxes[:, :k] = torch.cat([centre - size / 2, centre + size / 2], dim=-1).clamp(0, 1)
    labels = torch.zeros(n, m, dtype=torch.int64)
    labels[:, :k] = torch.randint(1, num_classes, (n, k), generator=g)
    return SyntheticBatch(images, boxes, labels, torch.arange(n)).to(device)


@dataclass(frozen=True)
class BenchmarkResult:
    """Throughput of the timed steps."""

    images_per_second: float
    seconds: float
    timed_steps: int
    global_batch: int
    world_size: int
    device: str
    compiled: bool
    precision: str


def run_benchmark(settings: Settings) -> BenchmarkResult:
    """Warm up, time ``benchmark.timed_steps`` train steps, print and return img/s (all ranks)."""
    ctx = init_distributed(settings.distributed, settings.device)
    try:
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        seed = broadcast_seed(settings.seed)
        seed_everything(seed + ctx.rank)
        c = build_components(settings, ctx)
        global_batch = settings.global_batch_size(ctx.world_size)
        lr = base_learning_rate(settings.optim.lr_per_32, global_batch) * 0.01  # small: stay finite
        for group in c.optimizer.param_groups:
            group["lr"] = lr
        accum = settings.optim.grad_accumulation_steps
        b = settings.benchmark
        micro = [
            synthetic_batch(
                settings.data.batch_size,
                settings.data.max_boxes,
                settings.model.num_classes,
                ctx.device,
                boxes_per_image=b.boxes_per_image,
                seed=seed + ctx.rank * accum + i,
            )
            for i in range(accum)
        ]
        for _ in range(b.warmup_steps):
            c.train_step(micro)
        _synchronize(ctx.device)
        barrier()
        start = time.perf_counter()
        for _ in range(b.timed_steps):
            metrics = c.train_step(micro)
        float(metrics.loss)  # wait for the last step
        _synchronize(ctx.device)
        barrier()
        seconds = time.perf_counter() - start
        result = BenchmarkResult(
            images_per_second=global_batch * b.timed_steps / seconds,
            seconds=seconds,
            timed_steps=b.timed_steps,
            global_batch=global_batch,
            world_size=ctx.world_size,
            device=torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
            compiled=c.compiled,
            precision="bf16" if c.autocast_dtype is torch.bfloat16 else "fp32",
        )
        if ctx.is_main:
            print(
                f"benchmark: {result.images_per_second:.2f} img/s ({result.timed_steps} steps of global"
                f" batch {global_batch} in {seconds:.2f} s; {ctx.world_size}x {result.device},"
                f" {result.precision}, compiled={result.compiled}, channels_last={settings.channels_last})",
                flush=True,
            )
        return result
    finally:
        destroy()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
