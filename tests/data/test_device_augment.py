"""Device-path pieces on CPU tensors against PIL (the CPU path's arithmetic), and bad files."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ssd_data.config import DataConfig
from ssd_data.device.augment import decode_jpegs, pil_decode
from ssd_data.device.color import jitter_fused_batch, jitter_reference_batch
from ssd_data.device.plan import jitter_group_sizes, with_plan
from ssd_data.device.resize import crop_flip_resize, vertical_first
from ssd_data.device.samples import (
    NUM_PARAMS,
    P_BRIGHTNESS,
    P_HUE_SHIFT,
    P_ORDER,
    read_encoded,
)
from ssd_data.errors import BadImageError
from ssd_data.host.color import jitter_fused, jitter_reference
from ssd_data.pipeline import build_train_loader
from ssd_data.samples.jitter import sample_jitter

from tests.helpers.datasets import damage_images, make_coco, write_jpeg


def _params(rng: np.random.Generator):
    p = sample_jitter(rng)
    params = torch.zeros(1, NUM_PARAMS)
    params[0, P_BRIGHTNESS : P_BRIGHTNESS + 4] = torch.tensor(
        [p.brightness, p.contrast, p.saturation, p.hue]
    )
    params[0, P_ORDER : P_ORDER + 4] = torch.tensor(p.order, dtype=torch.float32)
    params[0, P_HUE_SHIFT] = int(np.int32(p.hue * 255)) % 256
    return p, params


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)


def test_colour_jitter_matches_pil_ops() -> None:
    """Reference jitter: PIL/torchvision's four ops bit for bit; fused: PIL's colour-matrix
    pass within 1 grey level (exact mean colour instead of a 4x4-reduced copy)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:56]
    smooth = np.stack([(3 * x + y) % 256, (4 * y) % 256, (x * y) % 256], -1).astype(np.uint8)
    noise = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for image in (smooth, noise):
        pil = Image.fromarray(image)
        for _ in range(12):
            p, params = _params(rng)
            plan = with_plan(params.numpy())
            decisions, groups = torch.from_numpy(plan), jitter_group_sizes(plan)
            ref = jitter_reference_batch(_chw(image)[None].float(), decisions, groups)[0]
            assert torch.equal(ref.to(torch.uint8), _chw(np.asarray(jitter_reference(pil, p))))
            fused = jitter_fused_batch(_chw(image)[None].float(), params)[0]
            expected = _chw(np.asarray(jitter_fused(pil, p))).float()
            assert (fused - expected).abs().max() <= 1


def test_crop_flip_resize_matches_pil() -> None:
    rng = np.random.default_rng(1)
    identical = total = 0
    for h, w in [(480, 640), (37, 53), (640, 427), (300, 300)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for _ in range(4):
            left, top = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            right, bottom = int(rng.integers(left + 1, w + 1)), int(rng.integers(top + 1, h + 1))
            flip = bool(rng.random() < 0.5)
            crop = Image.fromarray(image).crop((left, top, right, bottom))
            if flip:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            expected = _chw(np.asarray(crop.resize((300, 300), Image.Resampling.BILINEAR)))
            crops = torch.tensor([[left, top, right, bottom, float(flip)]])
            vertical = int(vertical_first(right - left, bottom - top))
            out = crop_flip_resize(
                _chw(image)[None], crops, torch.zeros(1, dtype=torch.int64), vertical
            )
            assert (out[0] - expected.float()).abs().max() <= 1
            identical += int(torch.equal(out[0].to(torch.uint8), expected))
            total += 1
    assert identical >= total - 2  # PIL's pass order, see device_resize.vertical_first


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_greyscale_and_cmyk_jpegs_decode_to_pil_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "x.jpg"
    write_jpeg(path, 40, 30, np.random.default_rng(2), mode)
    data, hw, host_decode = read_encoded(path)
    assert hw == (30, 40) and host_decode == (mode == "CMYK")
    (decoded,) = decode_jpegs([torch.from_numpy(data)], torch.device("cpu"))
    expected = _chw(np.asarray(Image.open(path).convert("RGB")))
    assert decoded is not None and torch.equal(decoded, expected)
    assert torch.equal(pil_decode(data, path), expected)


def test_a_png_goes_to_the_cpu_decoder(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"  # a PNG under a .jpg name: PIL reads it, the JPEG decoder not
    Image.fromarray(np.full((8, 9, 3), 7, np.uint8)).save(path, format="PNG")
    data, hw, host_decode = read_encoded(path)
    assert host_decode and hw == (8, 9)
    assert decode_jpegs([torch.from_numpy(data)], torch.device("cpu")) == [None]
    assert torch.equal(pil_decode(data, path), torch.full((3, 8, 9), 7, dtype=torch.uint8))


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    make_coco(root, "train2017", num_images=16, num_empty=0, seed=2)
    damage_images(root / "train2017")  # 3: missing, 6: truncated, 9: not an image
    return root


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(**{"root": root, "batch_size": 4, "num_workers": 2, **kw})


def test_bad_files_are_replaced_exactly_as_the_cpu_path_does(
    bad_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs, logs = {}, {}
    for where in ("cpu", "cuda"):
        caplog.clear()
        loader = build_train_loader(_cfg(bad_root, augment_device=where), 0, 1, 0, "cpu")
        with caplog.at_level(logging.WARNING, logger="ssd_data"):
            runs[where] = (list(itertools.islice(iter(loader), 8)), loader.stats())
        loader.close()
        logs[where] = caplog.text
    (cpu, cpu_stats), (dev, dev_stats) = runs["cpu"], runs["cuda"]
    assert dev_stats["bad_image"] == cpu_stats["bad_image"] >= 6  # two epochs
    for c, d in zip(cpu, dev, strict=True):
        for name in ("boxes", "labels", "image_ids"):
            assert torch.equal(getattr(c, name), getattr(d, name))
        assert (c.images.int() - d.images.int()).abs().max() <= 2  # fused jitter's mean colour
    assert not {1003, 1006, 1009} & set(torch.cat([b.image_ids for b in dev]).tolist())
    for reason in ("file not found", "truncated or corrupt", "not an image file"):
        assert logs["cpu"].count(reason) == logs["cuda"].count(reason) > 0
    for name in ("000000000003.jpg", "000000000006.jpg", "000000000009.jpg"):
        assert logs["cpu"].count(name) == logs["cuda"].count(name) > 0


def test_error_policy_names_the_truncated_file(bad_root: Path) -> None:
    cfg = _cfg(bad_root, augment_device="cuda", bad_image_policy="error", num_workers=0)
    loader = build_train_loader(cfg, 0, 1, 0, "cpu")
    with pytest.raises(BadImageError, match=r"cannot read image .*0000000000(03|06|09)\.jpg"):
        list(itertools.islice(iter(loader), 4))
    loader.close()
