"""RCP check of infra/mlperf_score.py on synthetic closed-division SSD logs built here.

Golden verdicts come from mlperf-logging's RCP checker run on its own (``python -m
mlperf_logging.rcp_checker DIR --rcp_version 1.0.0``: exit 0 = passed, 1 = failed) on the same
logs laid out as a submission folder (``result_<i>.txt``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ._helpers import load_script

score_mod = load_script("mlperf_score.py")


def _line(key: str, value: object, time_ms: int, **metadata: object) -> str:
    record = {
        "namespace": "",
        "time_ms": time_ms,
        "event_type": "POINT_IN_TIME",
        "key": key,
        "value": value,
        "metadata": {"file": "synthetic.py", "lineno": 1, **metadata},
    }
    return ":::MLLOG " + json.dumps(record)


def closed_log(
    epochs: int, batch: int = 1024, minutes: float = 10.0, division: str = "closed"
) -> str:
    """An SSD log converging (mAP 0.23) after ``epochs`` epochs, evaluated every 5 epochs."""
    t0 = 1_700_000_000_000
    lines = [
        _line("submission_benchmark", "ssd", t0),
        _line("submission_division", division, t0),
        _line("global_batch_size", batch, t0),
        _line("run_start", None, t0),
    ]
    step_ms = int(minutes * 60000 / epochs)
    for e in range(5, epochs + 1, 5):
        acc = 0.23 if e == epochs else 0.23 * e / (epochs + 5)
        lines.append(_line("eval_accuracy", acc, t0 + e * step_ms, epoch_num=e))
    if epochs % 5:
        lines.append(_line("eval_accuracy", 0.23, t0 + epochs * step_ms, epoch_num=epochs))
    lines.append(_line("run_stop", None, t0 + epochs * step_ms, status="success"))
    return "\n".join(lines) + "\n"


def _write_runs(root: Path, epochs: list[int], batch: int, division: str = "closed") -> list[Path]:
    """Run folders ``root/run-<i>/mlperf.log`` and a submission folder ``root/sub/result_<i>.txt``."""
    runs = []
    (root / "sub").mkdir(parents=True)
    for i, e in enumerate(epochs):
        text = closed_log(e, batch, minutes=10.0 + i, division=division)
        (root / f"run-{i}").mkdir()
        (root / f"run-{i}" / "mlperf.log").write_text(text)
        (root / "sub" / f"result_{i}.txt").write_text(text)
        runs.append(root / f"run-{i}")
    return runs


def _golden(folder: Path, tmp_path: Path) -> bool:
    """The checker's own verdict (its CLI, another process)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlperf_logging.rcp_checker",
            str(folder),
            "--rcp_version",
            "1.0.0",
            "--log_output",
            str(tmp_path / "rcp.log"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


@pytest.mark.parametrize(
    ("epochs", "batch", "expected_pass", "message"),
    [
        ([50] * 5, 1024, True, "RCP found"),  # at the RCP mean (50 epochs)
        ([20] * 5, 1024, False, "RCP found"),  # far too early
        ([55, 50, 60, 50, 55], 512, True, "slower convergence on smaller batch size"),
        ([30] * 5, 512, False, "Missing RCP"),  # smaller batch, faster than 1024's RCP
        ([75] * 5, 3072, True, "RCP Interpolation"),  # pruned 2048: 1024..4096 gives ~74.6
        ([90] * 5, 8192, False, "Missing RCP"),  # above the largest RCP
    ],
)
def test_rcp_verdict_equals_the_checkers(
    epochs: list[int],
    batch: int,
    expected_pass: bool,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = _write_runs(tmp_path, epochs, batch)
    golden = _golden(tmp_path / "sub", tmp_path)
    assert golden is expected_pass  # the synthetic logs say what we meant them to

    verdict = score_mod.rcp_check([r / "mlperf.log" for r in runs])
    assert verdict.passed is golden
    assert message in verdict.message

    # Printed beside the score, for run folders and for a folder of result_*.txt alike.
    for args in ([str(r) for r in runs], [str(tmp_path / "sub")]):
        assert score_mod.main(args) == 0
        out = capsys.readouterr().out
        assert "score: " in out
        assert f"global batch {batch}): {'PASSED' if golden else 'FAILED'}" in out


def test_faster_but_within_max_speedup_passes_with_normalisation(tmp_path: Path) -> None:
    import mlperf_logging

    rcps = Path(mlperf_logging.__file__).parent / "rcp_checker" / "training_1.0.0" / "rcps_ssd.json"
    epochs = sorted(json.loads(rcps.read_text())["ssd_ref_4096_s64"]["Epochs to converge"])
    rcp_mean = sum(epochs[1:-1]) / (len(epochs) - 2)  # olympic mean, ~86.9
    runs = _write_runs(tmp_path, [84, 85, 85, 85, 90], 4096)
    verdict = score_mod.rcp_check([r / "mlperf.log" for r in runs])
    assert verdict.passed is _golden(tmp_path / "sub", tmp_path) is True
    # Olympic mean of the trials is 85: the score is scaled by rcp_mean / 85.
    assert verdict.norm_factor == pytest.approx(rcp_mean / 85)


def test_open_division_is_not_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _write_runs(tmp_path, [20] * 5, 1024, division="open")
    assert score_mod.main([str(r) for r in runs]) == 0
    assert "RCP check: not applicable (division open" in capsys.readouterr().out
