"""Exported weights (best.pt / last.pt): weights_only loading, SSD300 rebuild, metadata, bad files."""

from __future__ import annotations

import pytest
import torch
from ssd_core.model import SSD300
from ssd_train.checkpoint.weights import ExportError, export_weights, load_exported, read_exported
from torch import nn


@pytest.fixture(scope="module")
def ssd() -> SSD300:
    torch.manual_seed(0)
    model = SSD300(num_classes=5, backbone_weights=None).eval()
    with torch.no_grad():  # non-default BN statistics, so that buffers are checked too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    return model


def test_exported_weights_rebuild_the_same_ssd300(tmp_path, ssd):
    wrapped = nn.parallel.DistributedDataParallel.__new__(nn.parallel.DistributedDataParallel)
    nn.Module.__init__(wrapped)
    wrapped.module = ssd  # what a DDP wrapper looks like to export (keys "module.*")
    path = export_weights(
        wrapped, tmp_path / "best.pt", {"map": 0.25, "epoch": 40, "settings": {"seed": 1}}
    )

    raw = torch.load(path, weights_only=True)  # plain weights_only load works
    assert set(raw) == {"format", "model", "metadata"}
    assert not any(k.startswith("module.") for k in raw["model"])
    meta = raw["metadata"]
    assert meta["map"] == 0.25 and meta["epoch"] == 40 and meta["settings"] == {"seed": 1}
    assert (
        meta["num_classes"] == 5
        and meta["versions"]["torch"] == str(torch.__version__)
        and "T" in meta["date"]
    )

    model, meta2 = load_exported(path)
    assert isinstance(model, SSD300) and meta2 == meta and not model.training
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        for got, want in zip(model(x), ssd(x), strict=True):
            assert torch.equal(got, want)


def test_bad_files_and_metadata_get_clear_errors(tmp_path, ssd):
    with pytest.raises(ExportError, match="no weights file at"):
        read_exported(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ExportError, match="not an ssd-mlperf weights file"):
        read_exported(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip")
    with pytest.raises(ExportError, match="torch cannot read it"):
        read_exported(tmp_path / "garbage.pt")
    with pytest.raises(ExportError, match=r"metadata\['when'\]"):
        export_weights(ssd, tmp_path / "x.pt", {"when": object()})
