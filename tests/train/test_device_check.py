"""``infra/device_check.sh``: committed executable, offline wheels listed, and a ``--tiny`` CPU run
that prints the one table and exits 0 within 7 minutes."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "device_check.sh"


def test_device_scripts_are_executable_and_install_only_offline() -> None:
    for name in ("device_check.sh", "device_wheels.sh"):
        assert os.access(REPO / "infra" / name, os.X_OK), name
    text = SCRIPT.read_text()
    assert "--no-index" in text  # nothing from the network on the device machine
    wheels = (REPO / "infra" / "device_wheels.sh").read_text()
    for package in ("pydantic-settings", "torchdata", "faster-coco-eval", "mlperf-logging"):
        assert package in wheels, package
