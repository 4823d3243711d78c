"""The SSD300 ResNet-34 trunk (torchvision resnet34 cut after layer3, conv4_1 at stride 1) and its weights.

ImageNet weights come from the torch hub cache only (``torch.hub.get_dir()/checkpoints/``); this
module never downloads. ``ssd-data download --backbone`` fetches :data:`BACKBONE_URL` there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from ssd_core.torch_file import load_tensor_file

BACKBONE_URL = "https://download.pytorch.org/models/resnet34-b627a593.pth"
"""torchvision ResNet34_Weights.IMAGENET1K_V1, the file ``ssd-data download --backbone`` fetches."""

BACKBONE_FILES: dict[str, str] = {
    "resnet34-b627a593.pth": "b627a593",  # torchvision's current file name
    "resnet34-333f7ec4.pth": "333f7ec4",  # the MLPerf reference's file (same weights, old format)
}
"""File names accepted in the hub cache -> the first hex digits of their sha256, in preference order."""

_DROPPED_PREFIXES = ("layer4.", "fc.")


class ResNet34Trunk(nn.Module):
    """torchvision ResNet-34 stem + layer1..layer3 with layer3's first block at stride 1.

    Submodule names equal torchvision's (``conv1``, ``bn1``, ``layer1`` ...) so its state dicts load
    directly. Input float [N, 3, H, W] normalised RGB; output float [N, 256, ceil(H/8), ceil(W/8)]
    (38x38 for 300x300). BatchNorm trains normally (not frozen).
    """

    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet34(weights=None)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        first_block = self.layer3[0]
        first_block.conv1.stride = (1, 1)
        first_block.downsample[0].stride = (1, 1)

    def forward(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] -> [N, 256, H/8, W/8] (38x38 at 300x300)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer3(self.layer2(self.layer1(x)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_hub_backbone() -> Path:
    """The hash-checked ImageNet ResNet-34 file in the torch hub cache.

    Raises:
        FileNotFoundError: no accepted file is there (the message says how to get one).
        ValueError: a file is there but its sha256 does not start with the expected digits.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for name, sha_prefix in BACKBONE_FILES.items():
        path = checkpoints / name
        if not path.is_file():
            continue
        digest = _sha256(path)
        if not digest.startswith(sha_prefix):
            raise ValueError(
                f"backbone weights {path} are corrupt or not the expected file: sha256 {digest[:16]}... "
                f"does not start with {sha_prefix}. Delete it and run `ssd-data download --backbone`."
            )
        return path
    names = " or ".join(BACKBONE_FILES)
    raise FileNotFoundError(
        f"ImageNet ResNet-34 weights not found: looked for {names} in {checkpoints} "
        "(torch.hub.get_dir()/checkpoints; TORCH_HOME moves it). Training never downloads them on "
        "its own: run `ssd-data download --backbone` on a machine with internet access (it fills "
        f"that folder; the file comes from {BACKBONE_URL}), or set the model's backbone_weights to "
        "the path of a torchvision resnet34 state dict, or to none for random initialisation."
    )


def load_backbone_state(path: str | Path) -> dict[str, Tensor]:
    """Read a torchvision-style ResNet-34 state dict (weights_only) and drop ``layer4.*``/``fc.*``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file {path} does not exist (backbone_weights must be 'imagenet', "
            "none, or the path of a torchvision resnet34 state dict)"
        )
    state = load_tensor_file(
        path,
        what="a torch state dict of backbone weights",
        instead="'imagenet', none, or the path of a torchvision resnet34 state dict",
    )
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"backbone weights {path} must hold a flat state dict of tensors (torchvision resnet34 "
            f"keys such as 'conv1.weight'), got {type(state).__name__}"
        )
    return {k: v for k, v in state.items() if not k.startswith(_DROPPED_PREFIXES)}


def load_backbone_weights(trunk: ResNet34Trunk, weights: str | Path) -> Path:
    """Load ``"imagenet"`` (hub cache, hash-checked) or a state-dict file into ``trunk``.

    Returns the file that was loaded. Raises a ValueError naming missing/unexpected keys.
    """
    path = find_hub_backbone() if str(weights) == "imagenet" else Path(weights)
    state = load_backbone_state(path)
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"backbone weights {path} do not fit the ResNet-34 trunk: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)} missing), unexpected keys "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)} unexpected)"
        )
    wrong_shape = [k for k, v in state.items() if v.shape != expected[k].shape]
    if wrong_shape:
        k = wrong_shape[0]
        raise ValueError(
            f"backbone weights {path}: {len(wrong_shape)} tensors have the wrong shape, e.g. {k} "
            f"{tuple(state[k].shape)} instead of {tuple(expected[k].shape)}"
        )
    trunk.load_state_dict(state, strict=True)
    return path
