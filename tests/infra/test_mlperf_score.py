"""infra/mlperf_score.py: MLPerf score of a set of trials (drop fastest and slowest, mean of the rest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.infra import load_script

score_mod = load_script("mlperf_score.py")


def _write_log(path: Path, start_ms: int, stop_ms: int | None, status: str = "success") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {
            "namespace": "",
            "time_ms": start_ms - 5000,
            "event_type": "INTERVAL_START",
            "key": "init_start",
            "value": None,
            "metadata": {},
        },
        {
            "namespace": "",
            "time_ms": start_ms,
            "event_type": "INTERVAL_START",
            "key": "run_start",
            "value": None,
            "metadata": {},
        },
    ]
    if stop_ms is not None:
        lines.append(
            {
                "namespace": "",
                "time_ms": stop_ms,
                "event_type": "INTERVAL_END",
                "key": "run_stop",
                "value": None,
                "metadata": {"status": status},
            }
        )
    path.write_text("".join(f":::MLLOG {json.dumps(r)}\n" for r in lines) + "noise line\n")
    return path


def test_drops_fastest_and_slowest_of_five() -> None:
    # by hand: sorted 9, 10, 10.5, 11, 30 -> mean(10, 10.5, 11) = 10.5
    assert score_mod.mlperf_score([10.0, 30.0, 9.0, 11.0, 10.5]) == pytest.approx(10.5)


def test_one_non_converged_trial_counts_as_slowest() -> None:
    # sorted converged 8, 9, 10, 12; the missing one is the slowest -> drop 8 and it: mean(9, 10, 12)
    assert score_mod.mlperf_score([12.0, None, 8.0, 9.0, 10.0]) == pytest.approx(31.0 / 3.0)


def test_two_non_converged_trials_give_no_score() -> None:
    with pytest.raises(score_mod.ScoreError, match="2 of 5 trials did not converge"):
        score_mod.mlperf_score([12.0, None, 8.0, None, 10.0])


def test_wrong_trial_count_is_refused() -> None:
    with pytest.raises(score_mod.ScoreError, match="expected 5 trials, got 4"):
        score_mod.mlperf_score([1.0, 2.0, 3.0, 4.0])


def test_cli_reads_run_folders_and_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = 1_700_000_000_000
    minutes = [10.0, 10.2, 9.8, 12.0, 10.4]
    paths = []
    for i, m in enumerate(minutes):
        log = _write_log(tmp_path / f"7-{i + 1}" / "mlperf.log", base, base + int(m * 60000))
        paths.append(str(log.parent if i % 2 else log))  # folders and files alike
    assert score_mod.main(paths) == 0
    out = capsys.readouterr().out
    # by hand: drop 9.8 and 12.0 -> (10.0 + 10.2 + 10.4) / 3 = 10.2
    assert "score: 10.200 minutes" in out


def test_aborted_and_resumed_trials_are_not_valid(tmp_path: Path) -> None:
    base = 1_000_000
    aborted = score_mod.read_trial(
        _write_log(tmp_path / "a" / "mlperf.log", base, base + 60000, "aborted")
    )
    assert aborted.minutes == pytest.approx(1.0) and not aborted.converged
    resumed_dir = tmp_path / "r"
    _write_log(resumed_dir / "mlperf.log", base, base + 60000)
    (resumed_dir / "mlperf.resume-1.log").write_text("")
    resumed = score_mod.read_trial(resumed_dir)
    assert resumed.resumed and not resumed.converged
    unfinished = score_mod.read_trial(_write_log(tmp_path / "u" / "mlperf.log", base, None))
    assert unfinished.minutes is None and unfinished.status == "no run_stop"


def test_cli_without_enough_converged_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = [
        str(
            _write_log(
                tmp_path / f"{i}" / "mlperf.log", 0, 60000, "success" if i < 3 else "aborted"
            )
        )
        for i in range(5)
    ]
    assert score_mod.main(logs) == 1
    assert "2 of 5 trials did not converge" in capsys.readouterr().out


def test_bad_log_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "mlperf.log"
    bad.write_text(':::MLLOG {"key": "run_start", "time_ms": 1}\n:::MLLOG {broken\n')
    with pytest.raises(score_mod.LogError, match=r"mlperf.log:2: not a JSON MLLOG record"):
        score_mod.read_trial(bad)
