"""Image normalisation for SSD300 (uint8 RGB -> ImageNet mean/std floats) and the normalised forward."""

from __future__ import annotations

import torch
from torch import Tensor, nn

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize_images(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """ImageNet-normalise a batch of uint8 RGB images on their own device.

    Computes ``(images / 255 - mean) / std`` per channel in float32 (as the reference's ToTensor +
    Normalize), then casts to ``dtype``. The memory format is kept: channels_last in, channels_last
    out.

    Args:
        images: uint8 [N, 3, H, W] RGB (NCHW or channels_last).
        dtype: result dtype (float32, or bf16/fp16 for low-precision steps).

    Returns:
        [N, 3, H, W] tensor of ``dtype``.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images: expected uint8 RGB images, got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"normalize_images: expected [N, 3, H, W], got {tuple(images.shape)}")
    mean, std = _mean_std(images.device)
    out = (images.to(torch.float32) / 255.0 - mean) / std
    return out.to(dtype)


def _mean_std(device: torch.device) -> tuple[Tensor, Tensor]:
    """ImageNet mean and std as float32 [1, 3, 1, 1] tensors on ``device``.

    Built once per device in eager mode: a tensor made from Python numbers is a blocking
    host-to-device copy on CUDA, which must not happen on every step. Inside a compiled region
    they are graph constants (built at trace time, nothing per call).
    """
    if torch.compiler.is_compiling():
        return _build_mean_std(device)
    cached = _MEAN_STD.get(device)
    if cached is None:
        with torch.inference_mode(False), torch.no_grad():  # usable inside and outside inference
            cached = _MEAN_STD[device] = _build_mean_std(device)
    return cached


def _build_mean_std(device: torch.device) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean, std


_MEAN_STD: dict[torch.device, tuple[Tensor, Tensor]] = {}


def forward_normalized(
    model: nn.Module,
    images: Tensor,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = True,
) -> tuple[Tensor, Tensor]:
    """Run SSD300 on uint8 images: normalise, optional channels_last, autocast, forward.

    The one preamble shared by the train step, evaluation and prediction.

    Args:
        model: SSD300 (or a DDP/FSDP2/compiled wrapper of it) returning ``(loc, logits)``.
        images: uint8 [N, 3, 300, 300] RGB on the model's device.
        autocast_dtype: ``torch.bfloat16`` for bf16 autocast, None for fp32.
        channels_last: feed the model a channels_last tensor.

    Returns:
        ``loc`` float32 [N, 8732, 4] box offsets and ``logits`` float32 [N, 8732, C].
    """
    x = normalize_images(images)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(
        x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    ):
        loc, logits = model(x)
    return loc.float(), logits.float()
