"""Backbone weight loading: hub cache (hash-checked, never downloading), file paths, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import ssd_core.backbone as backbone
import torch
import torchvision
from ssd_core.model import SSD300


@pytest.fixture(scope="module")
def resnet34_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A full torchvision resnet34 state dict (random weights, with layer4 and fc) saved to disk."""
    torch.manual_seed(7)
    state = torchvision.models.resnet34(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet34-test.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def trunk() -> backbone.ResNet34Trunk:
    return backbone.ResNet34Trunk()


@pytest.fixture
def hub_checkpoints(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache: TORCH_HOME points into the test's tmp dir."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    assert str(checkpoints).startswith(str(tmp_path))
    checkpoints.mkdir(parents=True)
    return checkpoints


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_constants_name_the_torchvision_files() -> None:
    assert backbone.BACKBONE_URL == "https://download.pytorch.org/models/resnet34-b627a593.pth"
    assert backbone.BACKBONE_FILES == {
        "resnet34-b627a593.pth": "b627a593",
        "resnet34-333f7ec4.pth": "333f7ec4",
    }
    # torchvision's own record of the IMAGENET1K_V1 file agrees.
    assert torchvision.models.ResNet34_Weights.IMAGENET1K_V1.url == backbone.BACKBONE_URL


def test_missing_hub_file_says_how_to_fetch_it(hub_checkpoints, trunk, monkeypatch) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("must never download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(FileNotFoundError, match="ssd-data download --backbone") as info:
        backbone.load_backbone_weights(trunk, "imagenet")
    assert str(hub_checkpoints) in str(info.value)
    assert "path" in str(info.value)


def test_hash_mismatch_is_reported(hub_checkpoints, resnet34_file, trunk) -> None:
    path, _ = resnet34_file
    target = hub_checkpoints / "resnet34-333f7ec4.pth"
    target.write_bytes(path.read_bytes())  # right name, wrong content
    with pytest.raises(ValueError, match="333f7ec4") as info:
        backbone.load_backbone_weights(trunk, "imagenet")
    assert str(target) in str(info.value)
    assert "ssd-data download --backbone" in str(info.value)


def test_imagenet_loads_from_hub_cache(hub_checkpoints, resnet34_file, monkeypatch) -> None:
    path, state = resnet34_file
    name = "resnet34-b627a593.pth"
    (hub_checkpoints / name).write_bytes(path.read_bytes())
    monkeypatch.setattr(backbone, "BACKBONE_FILES", {name: _sha256(path)[:8]})
    model = SSD300(backbone_weights="imagenet")
    trunk = model.backbone.state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer3.0.conv1.weight", "layer3.5.bn2.bias"):
        assert torch.equal(trunk[key], state[key]), key
    assert model.backbone.layer3[0].conv1.stride == (1, 1)


def test_file_path_loads_and_ignores_layer4_fc(resnet34_file, trunk) -> None:
    path, state = resnet34_file
    assert backbone.load_backbone_weights(trunk, str(path)) == path
    assert torch.equal(trunk.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])
    assert torch.equal(trunk.layer3[0].downsample[0].weight, state["layer3.0.downsample.0.weight"])


def test_wrong_keys_are_named(resnet34_file, trunk, tmp_path) -> None:
    _, state = resnet34_file
    broken = dict(state)
    del broken["layer3.5.bn2.weight"]
    broken["head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r"layer3\.5\.bn2\.weight") as info:
        backbone.load_backbone_weights(trunk, path)
    assert "head.extra.weight" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_shapes_are_named(resnet34_file, trunk, tmp_path) -> None:
    _, state = resnet34_file
    broken = dict(state)
    broken["conv1.weight"] = torch.zeros(64, 4, 7, 7)
    path = tmp_path / "shape.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r"conv1\.weight"):
        backbone.load_backbone_weights(trunk, path)


class _NotATensor:
    pass


def test_non_state_dict_files_are_rejected(trunk, tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        backbone.load_backbone_weights(trunk, missing)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(ValueError, match="state dict"):
        backbone.load_backbone_weights(trunk, listing)
    # weights_only=True: arbitrary pickled objects are refused, not executed.
    pickled = tmp_path / "object.pth"
    torch.save({"conv1.weight": _NotATensor()}, pickled)
    with pytest.raises(ValueError, match="Python objects other than tensors"):
        backbone.load_backbone_weights(trunk, pickled)
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pth is not a torch state dict.*cannot read it"):
        backbone.load_backbone_weights(trunk, text)


def test_legacy_serialisation_loads(resnet34_file, trunk, tmp_path) -> None:
    # The MLPerf reference's resnet34-333f7ec4.pth predates the zip format.
    _, state = resnet34_file
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    backbone.load_backbone_weights(trunk, path)
    assert torch.equal(trunk.layer1[0].bn1.running_mean, state["layer1.0.bn1.running_mean"])
