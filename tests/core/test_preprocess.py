"""normalize_images: ImageNet mean/std on uint8 RGB, dtype and memory format."""

from __future__ import annotations

import pytest
import torch
from ssd_core.preprocess import normalize_images


def test_values_per_channel(generator) -> None:
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8, generator=generator)
    out = normalize_images(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    for c in range(3):
        expected = (images[:, c].double() / 255 - mean[c]) / std[c]
        torch.testing.assert_close(out[:, c].double(), expected, rtol=0, atol=1e-6)
    # Pure black and white pixels, worked out by hand for the red channel.
    extremes = normalize_images(
        torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    )
    assert extremes[0, 0, 0].tolist() == pytest.approx([-0.485 / 0.229, 0.515 / 0.229], rel=1e-6)


def test_keeps_channels_last_and_casts(generator) -> None:
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    out = normalize_images(images, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        out.float(), normalize_images(images.contiguous()), rtol=1e-2, atol=1e-2
    )


def test_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="uint8"):
        normalize_images(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        normalize_images(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_mean_and_std_are_made_once_per_device(generator) -> None:
    """No tensor is built from Python numbers on later calls (a blocking host-to-device copy per
    step on CUDA), and the constants made under inference mode also serve training."""
    from ssd_core import preprocess
    from ssd_data.device.op_count import ops_of

    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=generator)
    preprocess._MEAN_STD.clear()
    with torch.inference_mode():  # evaluation first
        first = ops_of(lambda: normalize_images(images))
    assert first.sync_names() == {"lift_fresh": 2}
    later = ops_of(lambda: normalize_images(images))
    assert later.syncs == 0, later.sync_names()
    mean, std = preprocess._MEAN_STD[images.device]
    assert not mean.is_inference() and not std.is_inference()
    weight = torch.ones(3, 1, 1, requires_grad=True)
    (normalize_images(images) * weight).sum().backward()
    assert weight.grad is not None
