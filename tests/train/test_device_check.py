"""``infra/device_check.sh``: committed executable, offline wheels listed, and a ``--tiny`` CPU run
that prints the one table and exits 0 within 7 minutes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

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


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_tiny_device_check_prints_the_table_within_seven_minutes(tmp_path: Path) -> None:
    """With a cold Inductor cache, as on a fresh machine (the tiny run compiles with the eager
    backend: Dynamo captures the same graphs without Inductor's kernels, so its compiled row must
    show 0 breaks)."""
    cache = tmp_path / "inductor"
    start = time.monotonic()
    proc = subprocess.run(
        [str(SCRIPT), "--tiny"], cwd=REPO, capture_output=True, text=True, timeout=420,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TORCHINDUCTOR_CACHE_DIR": str(cache)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 420
    rows = {
        line.split("|")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.startswith("| ")
    }
    assert "img/s" in rows["train step b=2 eager"], proc.stdout
    compiled = rows["train step b=2 default"]
    assert "2 graphs / 0 breaks / 0 recompiles" in compiled, proc.stdout
    pipelines = {k: v for k, v in rows.items() if k.startswith("input ")}
    assert any(k.startswith("input cpu-fast") for k in pipelines), proc.stdout
    assert any(k.startswith("input device") for k in pipelines), proc.stdout
    assert all(" img/s" in v for v in pipelines.values()), proc.stdout
    assert any(k.startswith("evaluation 8 images") and " s total" in v for k, v in rows.items())
