"""Decompression bombs and absurd headers: a small file whose header claims 60,000 x 60,000 pixels
is an unreadable image (counted and named like a truncated one) on both training input paths and
in evaluation, refused from the header alone (data.max_image_pixels)."""

from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path

import pytest
from PIL import Image
from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS, DataConfig
from ssd_data.device.samples import read_encoded
from ssd_data.errors import UnreadableImage
from ssd_data.host.decode import open_image
from ssd_data.pipeline import build_eval_loader, build_train_loader

from tests.helpers.datasets import claim_jpeg_size, claim_png_size, make_coco

BOMB = 60_000


def small_image(path: Path, fmt: str) -> bytes:
    Image.new("RGB", (16, 12), (200, 40, 90)).save(path, format=fmt)
    return path.read_bytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_header_claiming_60000x60000_is_unreadable(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"bomb.{fmt.lower()}"
    claim = claim_jpeg_size if fmt == "JPEG" else claim_png_size
    path.write_bytes(claim(small_image(path, fmt), BOMB, BOMB))
    assert path.stat().st_size < 1000
    with pytest.raises(Image.DecompressionBombError):  # the fixture is a bomb by PIL's measure
        Image.open(path)
    with pytest.raises(UnreadableImage) as ours:
        open_image(path)
    assert "declares 3,600,000,000 pixels" in ours.value.reason  # PIL refuses it first
    assert "data.max_image_pixels (40,000,000)" in ours.value.reason
    with pytest.raises(UnreadableImage) as pils:  # without our limit, PIL's refusal is caught
        open_image(path, None)
    assert "decompression bomb" in pils.value.reason
    with pytest.raises(UnreadableImage) as device:  # device path: before any decoder
        read_encoded(path)
    assert device.value.path == path and "3,600,000,000 pixels" in device.value.reason


def test_the_limit_is_a_setting_below_pils(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(claim_jpeg_size(small_image(path, "JPEG"), 7000, 7000))  # 49 M pixels
    assert Image.MAX_IMAGE_PIXELS > 7000 * 7000  # PIL alone would take it
    with pytest.raises(UnreadableImage, match="7000x7000 = 49,000,000 pixels"):
        open_image(path)
    with open_image(path, 50_000_000) as image:  # raised limit: the header is accepted
        assert image.size == (7000, 7000)
    assert DataConfig(max_image_pixels=50_000_000).max_image_pixels == 50_000_000
    assert DataConfig().max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bombs")
    make_coco(root, "train2017", num_images=8, num_empty=0, seed=2)
    make_coco(root, "val2017", num_images=6, num_empty=0, seed=3)
    for split in ("train2017", "val2017"):
        path = root / split / f"{2:012d}.jpg"
        path.write_bytes(claim_jpeg_size(path.read_bytes(), BOMB, BOMB))
    return root


def _cfg(root: Path, **kw: object) -> DataConfig:
    base = {"root": root, "batch_size": 4, "eval_batch_size": 3, "num_workers": 1}
    return DataConfig(**{**base, **kw})


@pytest.mark.parametrize("augment_device", ["cpu", "cuda"])  # "cuda": the device path, on CPU
def test_training_counts_and_names_the_bomb_and_goes_on(
    root: Path, augment_device: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(root, augment_device=augment_device)
    loader = build_train_loader(cfg, 0, 1, seed=0, device="cpu")
    with caplog.at_level(logging.WARNING, logger="ssd_data"):
        batches = list(islice(loader, 2))  # one epoch: 8 images
    loader.close()
    assert all(b.images.shape[0] == 4 for b in batches)
    assert 1002 not in {int(i) for b in batches for i in b.image_ids}  # replaced
    assert loader.stats()["bad_image"] >= 1
    assert "000000000002.jpg" in caplog.text and "3,600,000,000 pixels" in caplog.text


def test_evaluation_leaves_the_bomb_out(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    loader = build_eval_loader(_cfg(root), 0, 1)
    with caplog.at_level(logging.WARNING, logger="ssd_data"):
        ids = [int(i) for batch in loader for i in batch.image_ids]
    loader.close()
    assert loader.stats()["bad_image"] == 1
    assert 1002 not in ids and len(set(ids)) == 5
    assert "000000000002.jpg" in caplog.text and "data.max_image_pixels" in caplog.text
