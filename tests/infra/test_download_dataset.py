"""infra/download_dataset.sh: COCO and the backbone land in the layout run.sub and the trainer expect
(a local HTTP server on 127.0.0.1 stands in for the COCO and PyTorch hosts)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

from tests.helpers.download_server import FileServer
from tests.helpers.infra import INFRA

FILES = {
    "annotations/instances_train2017.json": b'{"images": [], "annotations": [], "categories": []}',
    "annotations/instances_val2017.json": b'{"images": [], "annotations": [], "categories": []}',
    "train2017/000000000001.jpg": os.urandom(2000),
    "val2017/000000000002.jpg": os.urandom(1000),
}
BACKBONE = os.urandom(4096)


def _zip(prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in FILES.items():
            if name.startswith(prefix):
                zf.writestr(name, data)
    return buf.getvalue()


def test_dataset_and_backbone_land_in_the_expected_layout(tmp_path: Path) -> None:
    zips = {
        "zips/train2017.zip": (_zip("train2017/"), ["train2017"]),
        "zips/val2017.zip": (_zip("val2017/"), ["val2017"]),
        "annotations/annotations_trainval2017.zip": (
            _zip("annotations/"),
            ["annotations/instances_train2017.json", "annotations/instances_val2017.json"],
        ),
    }
    manifest = [
        {
            "name": p.rsplit("/", 1)[1],
            "url_path": p,
            "size": len(d),
            "md5": hashlib.md5(d).hexdigest(),
            "provides": prov,
        }
        for p, (d, prov) in zips.items()
    ]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    backbone_name = f"resnet34-{hashlib.sha256(BACKBONE).hexdigest()[:8]}.pth"
    served = {"/" + p: d for p, (d, _) in zips.items()} | {"/models/" + backbone_name: BACKBONE}
    datadir = tmp_path / "coco2017"
    with FileServer(served) as server:
        args = [
            str(INFRA / "download_dataset.sh"), str(datadir),
            "--base-url", server.url, "--manifest", str(tmp_path / "manifest.json"),
            "--backbone-url", server.url + "models/" + backbone_name, "--quiet",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "TORCH_HOME"}
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for name, data in FILES.items():
        assert (datadir / name).read_bytes() == data, name
    # TORCH_HOME=$DATADIR/torch at run time (run.sub, run_with_docker.sh): torch.hub's layout
    assert (datadir / "torch" / "hub" / "checkpoints" / backbone_name).read_bytes() == BACKBONE


def test_without_a_target_it_explains_usage(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATADIR"}
    result = subprocess.run(
        [str(INFRA / "download_dataset.sh")], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "usage: infra/download_dataset.sh DATADIR" in result.stderr
