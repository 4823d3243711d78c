"""RCP check of infra/mlperf_score.py on synthetic closed-division SSD logs built here.

Golden verdicts come from mlperf-logging's RCP checker run on its own, in another process
(``check_directory``, the call its CLI and the package checker make, ruleset 1.0.0) on the same
logs laid out as a submission folder (``result_<i>.txt``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.infra import load_script

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


CASES = {  # name: (epochs to converge of the 5 trials, global batch)
    "at_rcp_mean": ([50] * 5, 1024),
    "far_too_early": ([20] * 5, 1024),
    "smaller_batch_slower": ([55, 50, 60, 50, 55], 512),
    "smaller_batch_faster": ([30] * 5, 512),
    "interpolated": ([75] * 5, 3072),  # 2048 is pruned: 1024..4096 interpolated gives ~74.6
    "above_largest": ([90] * 5, 8192),
    "faster_within_speedup": ([84, 85, 85, 85, 90], 4096),
}


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Path], bool]]:
    """Per case: its folder, run folders, and the checker's verdict computed in another process
    (``check_directory`` on the submission layout, as the package checker calls it)."""
    root = tmp_path_factory.mktemp("rcp")
    built = {name: _write_runs(root / name, e, b) for name, (e, b) in CASES.items()}
    code = (
        "import json, sys\n"
        "from mlperf_logging.rcp_checker.rcp_checker import check_directory\n"
        "for d in sys.argv[1:]:\n"
        "    ok, msg, norm = check_directory(d, 'training', '1.0.0', False, False,"
        " rcp_pass='pruned_rcps')\n"
        "    print(json.dumps([bool(ok), msg, float(norm)]))\n"
    )
    folders = [str(root / name / "sub") for name in CASES]
    proc = subprocess.run(
        [sys.executable, "-c", code, *folders], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    verdicts = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    return {name: (root / name, built[name], v[0]) for name, v in zip(CASES, verdicts, strict=True)}


@pytest.mark.parametrize(
    ("case", "expected_pass", "message"),
    [
        ("at_rcp_mean", True, "RCP found"),
        ("far_too_early", False, "RCP found"),
        ("smaller_batch_slower", True, "slower convergence on smaller batch size"),
        ("smaller_batch_faster", False, "Missing RCP"),
        ("interpolated", True, "RCP Interpolation"),
        ("above_largest", False, "Missing RCP"),
    ],
)
def test_rcp_verdict_equals_the_checkers(
    case: str,
    expected_pass: bool,
    message: str,
    golden: dict[str, tuple[Path, list[Path], bool]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, runs, checker_pass = golden[case]
    assert checker_pass is expected_pass  # the synthetic logs say what we meant them to

    verdict = score_mod.rcp_check([r / "mlperf.log" for r in runs])
    assert verdict.passed is checker_pass
    assert message in verdict.message

    # Printed beside the score, for run folders and for a folder of result_*.txt alike.
    batch = CASES[case][1]
    for args in ([str(r) for r in runs], [str(root / "sub")]):
        assert score_mod.main(args) == 0
        out = capsys.readouterr().out
        assert "score: " in out
        assert f"global batch {batch}): {'PASSED' if checker_pass else 'FAILED'}" in out


def test_faster_but_within_max_speedup_passes_with_normalisation(
    golden: dict[str, tuple[Path, list[Path], bool]],
) -> None:
    import mlperf_logging

    rcps = Path(mlperf_logging.__file__).parent / "rcp_checker" / "training_1.0.0" / "rcps_ssd.json"
    epochs = sorted(json.loads(rcps.read_text())["ssd_ref_4096_s64"]["Epochs to converge"])
    rcp_mean = sum(epochs[1:-1]) / (len(epochs) - 2)  # olympic mean, 87.0
    _, runs, checker_pass = golden["faster_within_speedup"]
    verdict = score_mod.rcp_check([r / "mlperf.log" for r in runs])
    assert verdict.passed is checker_pass is True
    # Olympic mean of the trials is 85: the score is scaled by rcp_mean / 85.
    assert verdict.norm_factor == pytest.approx(rcp_mean / 85)


def test_open_division_is_not_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _write_runs(tmp_path, [20] * 5, 1024, division="open")
    assert score_mod.main([str(r) for r in runs]) == 0
    assert "RCP check: not applicable (division open" in capsys.readouterr().out
