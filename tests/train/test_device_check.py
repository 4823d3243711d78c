"""``infra/device_check.sh``: committed executable, offline wheels listed and checked against every
requirement, a ``--preflight`` that passes on this CPU machine in one line, and a ``--tiny`` CPU run (its
preflight's compile for real) that prints the one table, saves its files and exits 0 within 7
minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    wheels = (REPO / "infra" / "device_wheels.txt").read_text()
    for package in ("pydantic-settings", "torchdata", "faster-coco-eval", "mlperf-logging"):
        assert package in wheels, package


def _preflight_module():
    from tests.helpers.infra import load_script

    return load_script("device_preflight.py")


def test_wheel_list_covers_every_requirement_and_a_gap_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The requirement walk passes with the committed lists; without typing-extensions (which
    pydantic-core needs newer than the GPU image records) or without torchdata (on neither list)
    it stops with the distribution, who needs it and what to do."""
    pre = _preflight_module()
    count, _ = pre.check_requirements(wheels=None)
    assert count >= 15  # the project's requirements and the carried packages' own
    listed = pre.read_list(pre.WHEELS_LIST)
    for gap, expected in [
        ("typing-extensions", r"typing-extensions>=\S+ \(needed by (pydantic|typing-inspection)"),
        ("torchdata", r"torchdata \(needed by ssd-data\) is neither carried"),
    ]:
        short = tmp_path / f"without-{gap}.txt"
        short.write_text("\n".join(n for n in listed if n != gap) + "\n")
        monkeypatch.setattr(pre, "WHEELS_LIST", short)
        with pytest.raises(pre.PreflightError, match=expected) as error:
            pre.check_requirements(wheels=None)
        assert "infra/device_wheels.txt" in str(error.value)


def test_preflight_flag_prints_one_line_and_stops_before_any_row(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--preflight`` on this CPU machine: the real imports, requirement walk and C compiler, one
    line, exit 0, no row. Its tiny Inductor compile (~10 s of C++ on a CPU) is counted here, not
    run: the slow ``--tiny`` test below runs the whole preflight for real."""
    monkeypatch.syspath_prepend(str(REPO / "infra"))
    import device_preflight

    compiles: list[int] = []
    monkeypatch.setattr(device_preflight, "check_tiny_compile", lambda: compiles.append(1) or "cpu")
    from tests.helpers.infra import load_script

    assert load_script("device_check.py").main(["--preflight"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert compiles == [1]
    assert len(lines) == 1 and lines[0].startswith("preflight ok"), lines
    assert "no CUDA device" in lines[0] and "compiler" in lines[0]


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_tiny_device_check_prints_the_table_within_seven_minutes(tmp_path: Path) -> None:
    """With a cold Inductor cache, as on a fresh machine (the tiny run compiles with the eager
    backend: Dynamo captures the same graphs without Inductor's kernels, so its compiled row must
    show 0 breaks)."""
    cache = tmp_path / "inductor"
    start = time.monotonic()
    proc = subprocess.run(
        [str(SCRIPT), "--tiny", "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=420,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TORCHINDUCTOR_CACHE_DIR": str(cache)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 420
    rows = {
        line.split("|")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.startswith("| ")
    }
    first = proc.stdout.splitlines()[0]  # the preflight's one line, its compile for real
    assert first.startswith("preflight ok") and "no CUDA device" in first, proc.stdout
    assert "compiler" in first, proc.stdout
    assert "img/s" in rows["train step b=2 eager"], proc.stdout
    compiled = rows["train step b=2 default"]
    assert "2 graphs / 0 breaks / 0 recompiles" in compiled, proc.stdout
    assert "0 syncs per step; 0 cudagraph skips" in compiled, proc.stdout
    out = tmp_path / "out"
    assert (out / "table.txt").read_text().strip() in proc.stdout
    saved = json.loads((out / "benchmarks.json").read_text())
    eager, default = saved["train b=2 eager"], saved["train b=2 default"]
    assert eager["ops_per_step"] == default["ops_per_step"] > 500  # both counted eagerly
    assert eager["syncs_per_step"] == 0 and "pipelines" in saved["input pipeline"]
    trace = json.loads(
        __import__("gzip").decompress((out / "trace_b2_compiled.json.gz").read_bytes())
    )
    assert any("convolution" in e.get("name", "") for e in trace["traceEvents"])
    pipelines = {k: v for k, v in rows.items() if k.startswith("input ")}
    assert any(k.startswith("input cpu-fast") for k in pipelines), proc.stdout
    assert any(k.startswith("input device") for k in pipelines), proc.stdout
    assert all(" img/s" in v for v in pipelines.values()), proc.stdout
    assert any(k.startswith("evaluation 8 images") and " s total" in v for k, v in rows.items())


def test_a_missing_package_stops_the_check_with_one_line_before_any_row() -> None:
    """Without site-packages (``python -S``: no torch, no pydantic) the check stops at the
    preflight: exit 4, one line naming the import, no row started."""
    proc = subprocess.run(
        [sys.executable, "-S", str(REPO / "infra" / "device_check.py"), "--tiny"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [proc.stdout.strip()], proc.stdout
    assert proc.stdout.startswith("preflight FAILED: import torch: ModuleNotFoundError"), (
        proc.stdout
    )
    assert proc.stderr == ""
