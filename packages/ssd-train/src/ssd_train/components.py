"""Builds what every mode needs: the (wrapped) model, loss, post-processing, optimiser and train step.

Training, ``--mode benchmark`` and ``--mode eval`` all build their objects here, so the benchmark
times exactly the step that training runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from ssd_core import COCO_NUM_CLASSES, Detector, ModelConfig, build_detector, encode_compute_dtype
from torch import Tensor, nn

from ssd_train.distributed import DistributedContext, wrap_model
from ssd_train.optim import build_optimizer
from ssd_train.report.console import quiet_cpu_compile_notice
from ssd_train.settings import Settings
from ssd_train.train_step import TrainStep


@dataclass
class Components:
    """Objects of one run.

    Attributes:
        model: what the train step calls (DDP wrapper, FSDP2-sharded module, or the bare model).
        eval_model: what inference calls (the module inside DDP; the sharded module under FSDP2).
        criterion: ``ssd_core.loss.SSDLoss``.
        postprocessor: ``ssd_core.postprocess.PostProcessor``.
        optimizer: SGD over ``model``'s parameters.
        train_step: the one :class:`TrainStep`.
        autocast_dtype: bf16 or None.
        compiled: whether the step is compiled (forward+loss with its backward, and the update;
            ``settings.compile_mode`` says how).
    """

    model: nn.Module
    eval_model: nn.Module
    criterion: nn.Module
    postprocessor: Any
    optimizer: torch.optim.Optimizer
    train_step: TrainStep
    autocast_dtype: torch.dtype | None
    compiled: bool

    def warm_up(self, settings: Settings, *, seed: int) -> None:
        """Compile the step before run_start on a synthetic batch of the run's shapes; the step
        restores every state it touched (collective under DDP/FSDP2)."""
        data, accum = settings.data, settings.optim.grad_accumulation_steps
        device = next(self.model.parameters()).device
        batch = synthetic_batch(
            data.batch_size,
            data.max_boxes,
            settings.model.num_classes or COCO_NUM_CLASSES,
            device,
            seed=seed,
        )
        self.train_step.warm_up(batch, micro_batches=accum)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast is faster."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # torch without these probes
        return False


def autocast_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast for ``bf16``, and for ``auto`` on CUDA and on CPUs with bf16 instructions;
    None means fp32."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and (
        device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())
    ):
        return torch.bfloat16
    return None


def compile_enabled(setting: bool | None, device: torch.device) -> bool:
    """``compile`` setting, with None meaning on for CUDA and off elsewhere."""
    return device.type == "cuda" if setting is None else setting


DetectorFactory = Callable[[ModelConfig], Detector]
"""Builds the network, loss and post-processing from the model settings (``build_detector``)."""


def build_components(
    settings: Settings, ctx: DistributedContext, *, detector_factory: DetectorFactory | None = None
) -> Components:
    """Model on the device (channels_last), wrapped for DDP/FSDP2, SGD, and the train step.

    ``detector_factory``: what builds the network, loss and post-processing from
    ``settings.model``; None = :func:`ssd_core.build_detector` (SSD300-ResNet34). Another network
    with SSD300's interface (uint8-normalised images float [N, 3, 300, 300] -> ``(loc [N, 8732,
    4], logits [N, 8732, C])``) trains, evaluates and checkpoints through the same code, e.g. a
    small stand-in that makes a run of the whole loop take seconds.
    """
    detector = (detector_factory or build_detector)(settings.model)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = detector.model.to(device=ctx.device, memory_format=memory_format)
    model.train()
    criterion = detector.criterion.to(ctx.device)
    postprocessor = detector.postprocessor
    wrapped = wrap_model(model, ctx, settings.distributed)
    eval_model = getattr(wrapped, "module", wrapped)
    optimizer = build_optimizer(wrapped, settings.optim, ctx.device)
    autocast_dtype = autocast_dtype_for(settings.precision, ctx.device)
    compiled = compile_enabled(settings.compile, ctx.device)
    if compiled and ctx.device.type == "cpu":
        quiet_cpu_compile_notice()
    step = TrainStep(
        wrapped,
        criterion,
        optimizer,
        device=ctx.device,
        autocast_dtype=autocast_dtype,
        channels_last=settings.channels_last,
        grad_clip_norm=settings.optim.grad_clip_norm,
        compile=compiled,
        compile_mode=settings.compile_mode,
        compile_backend=settings.compile_backend,
        encode_dtype=encode_compute_dtype(settings.model),
    )
    return Components(
        wrapped, eval_model, criterion, postprocessor, optimizer, step, autocast_dtype, compiled
    )


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
