"""The device input path (data.augment_device) run on CPU tensors against the CPU path.

Same seeds -> same crop/flip/jitter decisions, so boxes, labels and image ids must be identical
bit for bit, and pixels must match the CPU path within the tolerances below. The device code
re-does PIL's arithmetic, so most images are identical; the rest come from PIL's choice of the
order of its two resize passes (ssd_data.device.resize.vertical_first, right for ~98% of crop
sizes), a +-1 that the colour jitter can stretch. Measured on these fixtures (24 images, seed 7):
reference jitter 23 of 24 images identical, max 4, mean 0.005 grey levels; fast jitter max 1,
mean 0.012 (the mean colour: exact on the device, from a 4x4-reduced copy on the CPU).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from ssd_data.config import DataConfig
from ssd_data.device.path import resolve_augment_device
from ssd_data.pipeline import build_train_loader

from tests.helpers.datasets import make_coco

NUM_TRAIN = 24  # images 3, 8, 13, 18, 23 greyscale JPEGs, image 4 CMYK


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_coco(root, "train2017", num_images=NUM_TRAIN, num_empty=0, seed=0, size_range=(60, 400))
    return root


def _cfg(root: Path, **kw) -> DataConfig:
    base = {"root": root, "batch_size": 4, "num_workers": 2, "max_boxes": 8}
    return DataConfig(**{**base, **kw})


def _take(loader, n: int) -> list:
    batches = list(itertools.islice(iter(loader), n))
    loader.close()
    return batches


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    d = (a.to(torch.int16) - b.to(torch.int16)).abs()
    return int(d.max()), float(d.float().mean())


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_same_decisions_boxes_and_pixels_as_the_cpu_path(root: Path, impl: str) -> None:
    steps = NUM_TRAIN // 4  # one epoch: every image, the greyscale and CMYK ones too
    cpu = _take(
        build_train_loader(_cfg(root, augment_device="cpu", augment_impl=impl), 0, 1, 7), steps
    )
    dev = _take(
        build_train_loader(_cfg(root, augment_device="cuda", augment_impl=impl), 0, 1, 7, "cpu"),
        steps,
    )
    for c, d in zip(cpu, dev, strict=True):
        assert d.images.shape == (4, 3, 300, 300) and d.images.dtype == torch.uint8
        assert d.images.is_contiguous(memory_format=torch.channels_last)
        for name in ("boxes", "labels", "image_ids"):
            assert torch.equal(getattr(c, name), getattr(d, name)), name
    biggest, mean = _diff(torch.cat([b.images for b in cpu]), torch.cat([b.images for b in dev]))
    print(f"{impl}: device vs CPU path, max {biggest} mean {mean:.4f} grey levels")
    if impl == "reference":
        identical = sum(
            torch.equal(x, y)
            for c, d in zip(cpu, dev, strict=True)
            for x, y in zip(c.images, d.images, strict=True)
        )
        assert identical >= NUM_TRAIN * 3 // 4 and biggest <= 8 and mean < 0.05
    else:
        assert biggest <= 2 and mean < 0.05


def test_resume_mid_stream_and_worker_settings_give_the_same_batches(root: Path) -> None:
    cfg = _cfg(root, augment_device="cuda", batch_size=3)
    full = _take(build_train_loader(cfg, 1, 2, 21, "cpu"), 6)  # 12 images per rank: 2 epochs
    first = build_train_loader(cfg, 1, 2, 21, "cpu")
    it = iter(first)
    seen = [next(it) for _ in range(3)]
    state = first.state_dict()
    first.close()
    other = _cfg(root, augment_device="cuda", batch_size=3, num_workers=1, worker_type="process")
    resumed = build_train_loader(other, 1, 2, 21, "cpu")
    resumed.load_state_dict(state)
    rest = _take(resumed, 3)
    for a, b in zip(seen + rest, full, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_which_path_augment_device_selects() -> None:
    assert resolve_augment_device("auto", "cpu") is None
    assert resolve_augment_device("cpu", "cuda:1") is None
    assert resolve_augment_device("auto", "cuda:1") == torch.device("cuda", 1)
    assert resolve_augment_device("cuda", "cuda:0") == torch.device("cuda", 0)
    assert resolve_augment_device("cuda", "cpu") == torch.device("cpu")
    assert DataConfig().augment_device == "auto"


@pytest.mark.gpu
def test_on_a_gpu_the_batches_match_the_device_code_run_on_the_cpu(root: Path) -> None:
    on_cpu = _take(build_train_loader(_cfg(root, augment_device="cuda"), 0, 1, 7, "cpu"), 3)
    on_gpu = _take(build_train_loader(_cfg(root), 0, 1, 7, "cuda"), 3)  # auto -> device path
    for c, g in zip(on_cpu, on_gpu, strict=True):
        assert g.images.device.type == "cuda"
        for name in ("boxes", "labels", "image_ids"):
            assert torch.equal(getattr(c, name), getattr(g, name).cpu()), name
    gpu_images = torch.cat([b.images.cpu() for b in on_gpu])
    _, mean = _diff(torch.cat([b.images for b in on_cpu]), gpu_images)
    assert mean < 2.0  # nvJPEG's IDCT/upsampling vs libjpeg-turbo's
