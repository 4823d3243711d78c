"""SSD300 with the MLPerf ResNet-34 backbone: trunk, five extra blocks, loc/conf heads.

Layout per spec section 1: six source maps (38, 19, 10, 5, 3, 1 with 256, 512, 512, 256, 256, 256
channels), a 3x3 loc and a 3x3 conf conv per map with [4, 6, 6, 6, 4, 4] boxes per location.
Head output channels are read as the reference's ``view(N, 4, nd*H*W)``: channel ``k*nd + d`` is
coordinate (or class) ``k`` of box ``d``, and the anchor index within a level is
``d*H*W + row*W + col``, the order of :func:`ssd_core.anchors.default_boxes`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ssd_core.anchors import BOXES_PER_LOCATION
from ssd_core.backbone import ResNet34Trunk, load_backbone_weights
from ssd_core.config import COCO_NUM_CLASSES

FEATURE_CHANNELS: tuple[int, ...] = (256, 512, 512, 256, 256, 256)
# (mid channels, stride, padding) of each extra block's 3x3 conv; its 1x1 conv maps to ``mid``.
_EXTRA_BLOCKS: tuple[tuple[int, int, int], ...] = (
    (256, 2, 1),
    (256, 2, 1),
    (128, 2, 1),
    (128, 1, 0),
    (128, 1, 0),
)


def _extra_block(
    in_channels: int, mid: int, out_channels: int, stride: int, padding: int
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, kernel_size=3, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    )


def _flatten_level(x: Tensor, per_box: int, boxes: int) -> Tensor:
    """Head output [N, per_box*boxes, H, W] (channel = k*boxes + d) -> [N, boxes*H*W, per_box]."""
    n, _, h, w = x.shape
    return (
        x.reshape(n, per_box, boxes, h, w).permute(0, 2, 3, 4, 1).reshape(n, boxes * h * w, per_box)
    )


class ExtraBlocks(nn.ModuleList):
    """The five extra blocks after the trunk, applied in sequence (a ModuleList: its state-dict keys
    are ``extras.<block>.<layer>...``; its own ``forward`` lets FSDP2 shard it as one unit and
    ``torch.compile`` trace it as one graph)."""

    def forward(self, x: Tensor) -> list[Tensor]:
        """Trunk output [N, 256, 38, 38] -> the five maps [N, 512, 19, 19] ... [N, 256, 1, 1]."""
        features = []
        for block in self:
            x = block(x)
            features.append(x)
        return features


class LevelHeads(nn.ModuleList):
    """One 3x3 conv head per source map (loc or conf), outputs flattened to default-box order.

    Args:
        in_channels: channels of each source map (``FEATURE_CHANNELS``).
        per_box: values per default box: 4 (loc offsets) or the class count (conf logits).
    """

    def __init__(self, in_channels: tuple[int, ...], per_box: int) -> None:
        super().__init__(
            nn.Conv2d(c, nd * per_box, kernel_size=3, padding=1)
            for c, nd in zip(in_channels, BOXES_PER_LOCATION, strict=True)
        )
        self.per_box = per_box

    def forward(self, features: list[Tensor]) -> Tensor:
        """Six source maps -> float [N, 8732, per_box] in default-box order."""
        return torch.cat(
            [
                _flatten_level(head(x), self.per_box, nd)
                for x, head, nd in zip(features, self, BOXES_PER_LOCATION, strict=True)
            ],
            dim=1,
        )


class SSD300(nn.Module):
    """SSD300-ResNet34 detector network (MLPerf Training v0.7).

    Args:
        num_classes: classes including background 0 (81 for COCO).
        backbone_weights: ``None`` (or ``"none"``) keeps torchvision's random init;
            ``"imagenet"`` loads ResNet34 IMAGENET1K_V1 from the torch hub cache (never
            downloads); any other value is a path to a torchvision resnet34 state dict
            (``layer4``/``fc`` keys are ignored).

    Extra blocks and heads get Xavier-uniform weights and PyTorch's default biases.
    """

    def __init__(
        self, num_classes: int = COCO_NUM_CLASSES, backbone_weights: str | Path | None = None
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"SSD300: num_classes counts background too, must be >= 2, got {num_classes}"
            )
        self.num_classes = num_classes
        self.backbone = ResNet34Trunk()
        self.extras = ExtraBlocks(
            _extra_block(cin, mid, cout, stride, pad)
            for cin, cout, (mid, stride, pad) in zip(
                FEATURE_CHANNELS[:-1], FEATURE_CHANNELS[1:], _EXTRA_BLOCKS, strict=True
            )
        )
        self.loc_heads = LevelHeads(FEATURE_CHANNELS, 4)
        self.conf_heads = LevelHeads(FEATURE_CHANNELS, num_classes)
        self._init_weights()
        if backbone_weights is not None and str(backbone_weights).lower() != "none":
            load_backbone_weights(self.backbone, backbone_weights)

    def _init_weights(self) -> None:
        for module in (*self.extras, *self.loc_heads, *self.conf_heads):
            for param in module.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        """Normalised images float [N, 3, 300, 300] -> the six source maps
        [N, 256, 38, 38], [N, 512, 19, 19], [N, 512, 10, 10], [N, 256, 5, 5], [N, 256, 3, 3], [N, 256, 1, 1].
        """
        x = self.backbone(images)
        return [x, *self.extras(x)]

    def apply_heads(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Six source maps -> ``(loc [N, A, 4], logits [N, A, C])`` in default-box order."""
        return self.loc_heads(features), self.conf_heads(features)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Predict offsets and class logits for every default box.

        Args:
            images: float [N, 3, 300, 300] ImageNet-normalised RGB (see
                :func:`ssd_core.preprocess.normalize_images`); NCHW or channels_last.

        Returns:
            ``(loc, logits)``: float [N, 8732, 4] offsets (decode with
            :func:`ssd_core.box_coder.decode`) and float [N, 8732, num_classes] logits, both
            contiguous, in the input dtype (bf16 under bf16 autocast).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SSD300: images must be [N, 3, 300, 300], got {tuple(images.shape)}")
        return self.apply_heads(self.feature_maps(images))
