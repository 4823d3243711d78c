"""SSD300: parameter count, layer structure, anchor order of the heads, init, channels_last, bf16."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from ssd_core.anchors import default_boxes
from ssd_core.box_coder import encode
from ssd_core.loss import SSDLoss
from ssd_core.model import SSD300
from ssd_core.preprocess import normalize_images

FEATURES = [(256, 38), (512, 19), (512, 10), (256, 5), (256, 3), (256, 1)]
BOXES = [4, 6, 6, 6, 4, 4]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def model() -> SSD300:
    torch.manual_seed(0)
    return SSD300(num_classes=81).eval()


@pytest.fixture(scope="module")
def float32_run(
    model: SSD300,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """One float32 NCHW forward shared by the tests: (images, feature maps, loc, logits)."""
    generator = torch.Generator().manual_seed(5)
    images = normalize_images(
        torch.randint(0, 256, (1, 3, 300, 300), dtype=torch.uint8, generator=generator)
    )
    with torch.no_grad():
        features = model.feature_maps(images)
        loc, logits = model.apply_heads(features)
    return images, features, loc, logits


def test_parameter_count(model: SSD300) -> None:
    assert _count(model) == 19_972_534
    assert _count(model.backbone) == 8_170_304
    assert _count(model.extras) == 3_574_400
    assert _count(model.loc_heads) + _count(model.conf_heads) == 8_227_830


def test_parameter_count_follows_num_classes() -> None:
    small = SSD300(num_classes=3)
    # Only the conf heads change: per level (9 * c_in + 1) * nd * num_classes parameters.
    conf = sum((9 * c + 1) * nd * 3 for (c, _), nd in zip(FEATURES, BOXES, strict=True))
    conf81 = sum((9 * c + 1) * nd * 81 for (c, _), nd in zip(FEATURES, BOXES, strict=True))
    assert _count(small) == 19_972_534 - conf81 + conf
    with pytest.raises(ValueError, match="num_classes"):
        SSD300(num_classes=1)


def test_structure(model: SSD300) -> None:
    block = model.backbone.layer3[0]
    assert block.conv1.stride == (1, 1)
    assert block.downsample[0].stride == (1, 1)
    assert model.backbone.layer2[0].conv1.stride == (2, 2)
    assert not hasattr(model.backbone, "layer4")
    for extra in model.extras:
        convs = [m for m in extra if isinstance(m, torch.nn.Conv2d)]
        assert [c.kernel_size for c in convs] == [(1, 1), (3, 3)]
        assert all(c.bias is not None for c in convs)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in extra)


def test_feature_map_and_output_shapes(model: SSD300, float32_run) -> None:
    _, features, loc, logits = float32_run
    assert [(f.shape[1], f.shape[2], f.shape[3]) for f in features] == [
        (c, s, s) for c, s in FEATURES
    ]
    assert loc.shape == (1, 8732, 4)
    assert logits.shape == (1, 8732, 81)
    assert loc.is_contiguous() and logits.is_contiguous()


def test_head_outputs_follow_default_box_order() -> None:
    """Feed position-coding maps through hand-set heads and read back (col, row, box, level)."""
    model = SSD300(num_classes=5)
    features = []
    for level, ((channels, size), nd) in enumerate(zip(FEATURES, BOXES, strict=True)):
        f = torch.zeros(1, channels, size, size)
        f[0, 0] = torch.arange(size, dtype=torch.float32).view(1, size)  # column index
        f[0, 1] = torch.arange(size, dtype=torch.float32).view(size, 1)  # row index
        features.append(f)
        loc_head, conf_head = model.loc_heads[level], model.conf_heads[level]
        with torch.no_grad():
            loc_head.weight.zero_()
            loc_head.bias.zero_()
            conf_head.weight.zero_()
            for d in range(nd):
                # Reference layout: channel k * nd + d is coordinate k of box d.
                loc_head.weight[0 * nd + d, 0, 1, 1] = 1.0  # centre tap of the column map
                loc_head.weight[1 * nd + d, 1, 1, 1] = 1.0  # centre tap of the row map
                loc_head.bias[2 * nd + d] = d
                loc_head.bias[3 * nd + d] = level
                for c in range(5):
                    conf_head.bias[c * nd + d] = 100 * level + 10 * d + c
    with torch.no_grad():
        loc, logits = model.apply_heads(features)
    col, row, box, level = loc[0].round().long().unbind(dim=1)
    xywh = default_boxes("xywh", dtype=torch.float64)
    steps = torch.tensor([8, 16, 32, 64, 100, 300], dtype=torch.float64)
    fk = 300 / steps[level]
    assert torch.equal(xywh[:, 0], ((col + 0.5) / fk).clamp(0, 1))
    assert torch.equal(xywh[:, 1], ((row + 0.5) / fk).clamp(0, 1))
    # Box sizes from the spec table: index d of each level in default-box order.
    scales = torch.tensor([21, 45, 99, 153, 207, 261, 315], dtype=torch.float64) / 300
    sk = scales[level]
    sizes = {
        0: (sk, sk),
        1: ((sk * scales[level + 1]).sqrt(),) * 2,
        2: (sk * math.sqrt(2), sk / math.sqrt(2)),
        3: (sk / math.sqrt(2), sk * math.sqrt(2)),
        4: (sk * math.sqrt(3), sk / math.sqrt(3)),
        5: (sk / math.sqrt(3), sk * math.sqrt(3)),
    }
    for d, (w, h) in sizes.items():
        sel = box == d
        torch.testing.assert_close(xywh[sel, 2], w[sel].clamp(max=1))
        torch.testing.assert_close(xywh[sel, 3], h[sel].clamp(max=1))
    expected_logits = 100 * level + 10 * box
    for c in range(5):
        assert torch.equal(logits[0, :, c].round().long(), expected_logits + c)


def test_xavier_init_of_extras_and_heads(model: SSD300) -> None:
    convs = [m for m in model.extras.modules() if isinstance(m, torch.nn.Conv2d)]
    convs += list(model.loc_heads) + list(model.conf_heads)
    for conv in convs:
        out_c, in_c, kh, kw = conv.weight.shape
        bound = math.sqrt(6.0 / (in_c * kh * kw + out_c * kh * kw))
        w = conv.weight.detach()
        assert w.abs().max() <= bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        # Biases keep PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        assert conv.bias.detach().abs().max() <= 1 / math.sqrt(in_c * kh * kw)
        assert conv.bias.detach().abs().max() > 0


def test_channels_last_gives_the_same_outputs(model: SSD300, float32_run) -> None:
    images, _, loc, logits = float32_run
    with torch.no_grad():
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        assert model_cl.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        loc_cl, logits_cl = model_cl(images.contiguous(memory_format=torch.channels_last))
    # Different conv kernels sum in a different order: equal up to float32 rounding.
    torch.testing.assert_close(loc_cl, loc, rtol=0, atol=1e-4 * loc.abs().max().item())
    torch.testing.assert_close(logits_cl, logits, rtol=0, atol=1e-4 * logits.abs().max().item())


def test_bf16_autocast_forward_and_float32_loss(model: SSD300, float32_run) -> None:
    images, _, loc32, logits32 = float32_run
    boxes = torch.tensor([[[0.1, 0.2, 0.5, 0.7], [0.6, 0.1, 0.9, 0.4]]])
    loc_targets, label_targets = encode(boxes, torch.tensor([[3, 9]]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        loc16, logits16 = model(images)
        loss = SSDLoss()(loc16, logits16, loc_targets, label_targets)
    assert loc16.dtype == torch.bfloat16 and logits16.dtype == torch.bfloat16
    assert loss.total.dtype == torch.float32 and torch.isfinite(loss.total)
    # bf16 has ~3 significant digits; the outputs must still track the float32 ones closely.
    for low, full in ((loc16, loc32), (logits16, logits32)):
        low = low.float()
        assert torch.corrcoef(torch.stack((low.flatten(), full.flatten())))[0, 1] > 0.99
        assert (low - full).abs().mean() < 0.05 * full.abs().mean()


def test_forward_equals_feature_maps_then_heads(model: SSD300, float32_run) -> None:
    images, _, loc, logits = float32_run
    with torch.no_grad():
        loc_fw, logits_fw = model(images)
    assert torch.equal(loc_fw, loc) and torch.equal(logits_fw, logits)


def test_rejects_wrong_channel_count(model: SSD300) -> None:
    with pytest.raises(ValueError, match=r"\[N, 3, 300, 300\]"):
        model(torch.zeros(1, 4, 300, 300))
