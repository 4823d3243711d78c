"""infra/docker/filter_requirements.py: the container keeps the NGC image's torch and packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.infra import INFRA, REPO, load_script

filt = load_script("docker/filter_requirements.py")


def test_keeps_only_what_the_image_lacks() -> None:
    lines = [
        "# exported by uv",
        "torch==2.15.0",
        "torchvision==0.30.0 ; sys_platform == 'linux'",
        "triton==3.6.0",
        "nvidia-cudnn-cu13==9.26.0.51 ; sys_platform == 'linux'",
        "cuda-bindings==13.5.0",
        "numpy==2.5.5 ; python_full_version >= '3.12'",
        "Pydantic_Settings==2.16.3",
        "torchdata==0.11.0",
        "mlperf-logging==4.1.68",
        "colorama==0.4.6 ; sys_platform == 'win32'",
        "",
        "-e ./packages/ssd-core",
    ]
    installed = {"numpy", "pillow", "torch", "torchvision"}
    assert filt.filter_requirements(lines, installed) == [
        "Pydantic_Settings==2.16.3",
        "torchdata==0.11.0",
        "mlperf-logging==4.1.68",
    ]


def test_names_are_compared_normalised() -> None:
    assert filt.filter_requirements(["Faster_COCO.Eval==1.8.0"], {"faster-coco-eval"}) == []
    with pytest.raises(ValueError, match="not a requirement line"):
        filt.filter_requirements(["==1.0"], set())


def test_on_the_lock_export_drops_torch_and_installed_packages() -> None:
    """The Dockerfile's pipeline on this repository's uv.lock, with this environment as 'the image'."""
    export = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--no-emit-workspace", "--all-packages", "--no-hashes",
         "--no-annotate", "--no-header", "--format", "requirements.txt"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "torch==" in export and "pydantic==" in export
    kept = subprocess.run(
        [sys.executable, str(INFRA / "docker" / "filter_requirements.py")],
        input=export, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    # everything in uv.lock is installed in this venv, so a full image needs nothing more
    assert kept == []
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert "--no-deps -r /tmp/requirements-extra.txt" in dockerfile
    assert "--no-deps \\\n      ./packages/ssd-core" in dockerfile
