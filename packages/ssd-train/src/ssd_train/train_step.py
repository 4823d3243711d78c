"""The one training step, shared by training and ``--mode benchmark``.

Inside the step, on the device (interfaces.md "Inside the train step"): uint8 images -> ImageNet
normalisation (``ssd_core.preprocess.normalize_images``) -> ``ssd_core.box_coder.encode`` of the
padded ground truth -> SSD300 forward under autocast -> ``SSDLoss`` -> backward, for each
micro-batch (loss scaled by the micro-batch's share of the step's images, gradients synchronised
only after the last one), then optional gradient-norm clipping and the optimiser step. The
forward-and-loss part is ``torch.compile``d when asked. There is no host synchronisation: the
losses, gradient norm and a non-finite flag come back as device tensors that the caller reads
only on logging steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from ssd_core.box_coder import encode
from ssd_core.preprocess import normalize_images
from torch import Tensor, nn


class MicroBatch(Protocol):
    """What the step reads from a ``ssd_data`` ``TrainBatch``."""

    images: Tensor  # uint8 [N, 3, 300, 300] RGB, not normalised
    boxes: Tensor  # float32 [N, M, 4] ltrb normalised to [0, 1]
    labels: Tensor  # int64 [N, M], 0 = padding


@dataclass(frozen=True)
class StepMetrics:
    """Detached 0-d device tensors of one optimiser step (read them only on logging steps)."""

    loss: Tensor  # float32, image-weighted mean of the micro-batch total losses
    loc: Tensor  # float32, localisation part
    conf: Tensor  # float32, confidence part
    grad_norm: Tensor  # float32, global gradient norm before clipping (0 when clipping is off)
    finite: Tensor  # bool, loss and gradient norm finite


def compute_loss(
    model: nn.Module,
    criterion: nn.Module,
    images: Tensor,
    boxes: Tensor,
    labels: Tensor,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, loc, conf) float32 0-d losses of one micro-batch; the region that gets compiled.

    Args:
        images: uint8 [N, 3, 300, 300]; boxes: float32 [N, M, 4] ltrb in [0, 1]; labels: int64 [N, M].
    """
    x = normalize_images(images)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    loc_targets, label_targets = encode(boxes, labels)
    with torch.autocast(
        x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    ):
        loc, logits = model(x)
    out = criterion(loc.float(), logits.float(), loc_targets, label_targets)
    return out.total, out.loc, out.conf


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Let DDP / FSDP2 all-reduce gradients only when ``enabled`` (the last micro-batch of a step)."""
    if enabled:
        yield
    elif hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


class TrainStep:
    """Callable ``step(micro_batches) -> StepMetrics``: one optimiser step over 1..k micro-batches.

    Args:
        model: the (possibly DDP/FSDP-wrapped) SSD300, in train mode.
        criterion: ``ssd_core.loss.SSDLoss``.
        optimizer: the SGD optimiser (its LR is set by the caller's schedule before each step).
        device: where the step runs; batches on other devices are copied with ``non_blocking``.
        autocast_dtype: ``torch.bfloat16`` for bf16 autocast, ``None`` for fp32.
        channels_last: run the model on channels_last tensors.
        grad_clip_norm: clip the global gradient norm to this (None = no clipping).
        compile: ``torch.compile`` the forward-and-loss region.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = True,
        grad_clip_norm: float | None = None,
        compile: bool = False,
    ) -> None:
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.grad_clip_norm = grad_clip_norm
        self.loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]] = (
            torch.compile(compute_loss) if compile else compute_loss
        )
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, micro_batches: Sequence[MicroBatch]) -> StepMetrics:
        if not micro_batches:
            raise ValueError("a train step needs at least one micro-batch")
        total_images = sum(int(mb.images.shape[0]) for mb in micro_batches)
        sums = torch.zeros(3, device=self.device)
        last = len(micro_batches) - 1
        for i, mb in enumerate(micro_batches):
            images = mb.images.to(self.device, non_blocking=True)
            boxes = mb.boxes.to(self.device, non_blocking=True)
            labels = mb.labels.to(self.device, non_blocking=True)
            share = images.shape[0] / total_images
            with gradient_sync(self.model, enabled=i == last):
                total, loc, conf = self.loss_fn(
                    self.model,
                    self.criterion,
                    images,
                    boxes,
                    labels,
                    self.autocast_dtype,
                    self.channels_last,
                )
                (total * share).backward()
            sums += torch.stack([total.detach(), loc.detach(), conf.detach()]) * share
        grad_norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        finite = torch.isfinite(sums).all() & torch.isfinite(grad_norm)
        return StepMetrics(sums[0], sums[1], sums[2], grad_norm, finite)

    def _clip(self) -> Tensor:
        if self.grad_clip_norm is None:
            return torch.zeros((), device=self.device)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm, foreach=True)
        return norm.detach().float()
