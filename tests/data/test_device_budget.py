"""The device input path's launch and sync budgets, counted on CPU tensors (interfaces.md:
a constant number of operations per batch, no host sync), and the batched resize's pixels
independent of what else is in the batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ssd_data.bench.data import write_bench_dataset
from ssd_data.bench.op_budget import count_device_batch
from ssd_data.coco import CocoIndex
from ssd_data.device.augment import DeviceAugmenter
from ssd_data.device.batch import collate_encoded
from ssd_data.device.eval import DeviceEvalResizer, DeviceEvalSampleFn, EncodedEvalCollate
from ssd_data.device.op_count import ops_of
from ssd_data.device.plan import C_RESIZE_ORDER, num_vertical, with_plan
from ssd_data.device.resize import crop_flip_resize, pad_images
from ssd_data.device.samples import NUM_PARAMS, DeviceSampleFn


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 photo-sized RGB JPEGs of COCO's sizes (the steady state: every image on the device
    decoder; a CMYK or non-JPEG file takes the host decoder, see ssd_data.device.augment)."""
    root = tmp_path_factory.mktemp("budget")
    write_bench_dataset(root, 32, unique=6)
    return root


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_ops_per_batch_do_not_grow_with_the_batch_and_nothing_syncs(root: Path, impl: str) -> None:
    small = count_device_batch(root, 8, impl)  # type: ignore[arg-type]
    large = count_device_batch(root, 32, impl)  # type: ignore[arg-type]
    assert small.syncs == 0 and large.syncs == 0, (small.sync_names, large.sync_names)
    assert large.ops <= 1.15 * small.ops, (small.ops, large.ops)


def _pil(image: np.ndarray, rect: tuple[int, int, int, int], flip: bool) -> torch.Tensor:
    crop = Image.fromarray(image).crop(rect)
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    resized = np.asarray(crop.resize((300, 300), Image.Resampling.BILINEAR))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).float()


def _resize(images: list[np.ndarray], rects: list, flips: list[bool]) -> torch.Tensor:
    params = np.zeros((len(images), NUM_PARAMS), np.float32)
    params[:, :4], params[:, 4] = rects, flips
    plan = torch.from_numpy(with_plan(params))
    chw = [torch.from_numpy(a).permute(2, 0, 1) for a in images]
    order = plan[:, C_RESIZE_ORDER].to(torch.int64)
    return crop_flip_resize(pad_images(chw), plan[:, :5], order, num_vertical(params))


def test_a_batch_of_mixed_sizes_gives_each_image_what_it_gets_alone_and_pils_pixels() -> None:
    """Padding and grouping by pass order change nothing: each image of a mixed batch (both
    pass orders, flips, crops touching every border) equals its single-image run, and PIL's
    resize within the pass-order tolerance of test_device_augment."""
    rng = np.random.default_rng(5)
    sizes = [(480, 640), (640, 427), (37, 53), (700, 120), (300, 300), (90, 610)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    rects = [(0, 0, 640, 480), (10, 20, 427, 640), (5, 3, 50, 37), (0, 0, 120, 700)]
    rects += [(100, 0, 300, 150), (7, 40, 90, 600)]
    flips = [False, True, True, False, True, False]
    batch = _resize(images, rects, flips)
    assert batch.shape == (6, 3, 300, 300) and batch.dtype == torch.float32
    assert 0 < num_vertical(with_plan(_params(rects))) < len(images)  # both groups present
    for k in range(len(images)):
        alone = _resize([images[k]], [rects[k]], [flips[k]])[0]
        assert torch.equal(batch[k], alone), k
        assert (batch[k] - _pil(images[k], rects[k], flips[k])).abs().max() <= 1, k


def _params(rects: list) -> np.ndarray:
    params = np.zeros((len(rects), NUM_PARAMS), np.float32)
    params[:, :4] = rects
    return params


def test_evaluation_resize_on_the_device_is_flat_and_sync_free(root: Path) -> None:
    index = CocoIndex.from_json(root / "annotations" / "instances_train2017.json", skip_empty=False)
    fn = DeviceEvalSampleFn(index, root / "train2017")
    resizer = DeviceEvalResizer("cpu")
    counts = {}
    for size in (8, 32):
        batch, _ = EncodedEvalCollate()([fn((0, i, i)) for i in range(size)])
        assert batch is not None
        resizer(batch)  # per-device constants
        counts[size] = ops_of(lambda batch=batch: resizer(batch))
    assert counts[8].syncs == 0 and counts[32].syncs == 0, counts[32].sync_names()
    assert counts[32].ops <= 1.15 * counts[8].ops, (counts[8].ops, counts[32].ops)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_a_steady_state_batch_does_not_sync(root: Path) -> None:
    """What the CPU count cannot see (copies, allocator, library calls): PyTorch's sync debug
    mode raises on any synchronising CUDA call of a second run of a pinned batch."""
    index = CocoIndex.from_json(root / "annotations" / "instances_train2017.json", skip_empty=True)
    fn = DeviceSampleFn(index=index, image_dir=root / "train2017", seed=0, max_boxes=128)
    augmenter = DeviceAugmenter(fn, "cuda")
    batch, _ = collate_encoded([fn((0, i, i)) for i in range(32)], pin=True)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        augmenter(batch)  # per-device constants, cuBLAS/nvJPEG handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.stream(side):
            out, _ = augmenter(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.images.shape == (32, 3, 300, 300) and out.images.is_cuda
