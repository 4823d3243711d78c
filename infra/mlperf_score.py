"""MLPerf Training score of a set of SSD trials, from their MLPerf logs.

Per trial, the time is ``run_stop - run_start`` (the ``time_ms`` of the two ``:::MLLOG`` events,
in minutes); a trial converged when its ``run_stop`` has ``metadata.status == "success"``. The
score (MLPerf training rules for SSD, v0.7 and v1.0) takes the 5 trials, drops the fastest and the
slowest and averages the remaining 3; one trial that did not converge may be among them, and then
counts as the slowest (it is the one dropped). Two or more non-converged trials give no score.
A trial that was interrupted and resumed (its run folder holds ``mlperf.resume-<k>.log``) is not a
valid MLPerf result and counts as not converged.

    python infra/mlperf_score.py results/1234-1 results/1234-2 ... results/1234-5
    python infra/mlperf_score.py results/1234-*/mlperf.log
    python infra/mlperf_score.py --runs 2 results/1234-*      # fewer trials (not an MLPerf score)

Arguments are run folders (their ``mlperf.log``) or log files. Exit status 0 with a score, 1 when
there is none (too few converged trials), 2 on unreadable input.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REQUIRED_RUNS = 5  # MLPerf training rules, SSD


class ScoreError(ValueError):
    """The trials do not give a score; the message says why."""


class LogError(ValueError):
    """A trial's MLPerf log cannot be read; the message names the file and the record."""


@dataclass(frozen=True)
class Trial:
    """One trial: where its log is, its time in minutes (None: no run_stop), whether it counts."""

    path: Path
    minutes: float | None
    status: str
    resumed: bool

    @property
    def converged(self) -> bool:
        """Converged, uninterrupted and timed: the trial has a valid time."""
        return self.status == "success" and not self.resumed and self.minutes is not None


def read_events(path: Path) -> list[dict]:
    """The ``:::MLLOG`` records of a log file, in file order (other lines are ignored)."""
    events = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise LogError(f"{path}: cannot read the MLPerf log ({error.strerror})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        _, sep, payload = line.partition(":::MLLOG ")
        if not sep:
            continue
        try:
            record = json.loads(payload)
        except json.JSONDecodeError as error:
            raise LogError(f"{path}:{number}: not a JSON MLLOG record ({error.msg})") from None
        if not isinstance(record, dict) or "key" not in record or "time_ms" not in record:
            raise LogError(f"{path}:{number}: MLLOG record without key/time_ms: {payload[:80]}")
        events.append(record)
    return events


def read_trial(path: Path) -> Trial:
    """A trial from its run folder (``mlperf.log`` inside) or its log file."""
    log = path / "mlperf.log" if path.is_dir() else path
    if not log.is_file():
        raise LogError(f"{path}: no MLPerf log (expected a run folder with mlperf.log, or a log)")
    resumed = any(log.parent.glob("mlperf.resume-*.log"))
    events = read_events(log)
    starts = [e for e in events if e["key"] == "run_start"]
    stops = [e for e in events if e["key"] == "run_stop"]
    if len(starts) != 1:
        raise LogError(f"{log}: expected exactly one run_start, found {len(starts)}")
    if not stops:
        return Trial(log, None, "no run_stop", resumed)
    if len(stops) > 1:
        raise LogError(f"{log}: expected at most one run_stop, found {len(stops)}")
    stop = stops[0]
    status = str((stop.get("metadata") or {}).get("status", "missing status"))
    minutes = (float(stop["time_ms"]) - float(starts[0]["time_ms"])) / 60000.0
    return Trial(log, minutes, status, resumed)


def mlperf_score(minutes: Sequence[float | None], required_runs: int = REQUIRED_RUNS) -> float:
    """Mean of the trial times without the fastest and the slowest.

    Args:
        minutes: one entry per trial, its time in minutes, or None for a trial that did not
            converge (or is not a valid result).
        required_runs: how many trials the rules ask for (5 for SSD); at least 3.

    Raises:
        ScoreError: the wrong number of trials, or more than one without a time.
    """
    if required_runs < 3:
        raise ScoreError(
            f"a score needs at least 3 trials (drop fastest and slowest); got {required_runs}"
        )
    if len(minutes) != required_runs:
        raise ScoreError(f"expected {required_runs} trials, got {len(minutes)}")
    times = sorted(m for m in minutes if m is not None)
    missing = len(minutes) - len(times)
    if missing > 1:
        raise ScoreError(
            f"{missing} of {len(minutes)} trials did not converge: the rules allow one, which then "
            "counts as the slowest"
        )
    kept = times[1:] if missing else times[1:-1]
    return statistics.fmean(kept)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trials", nargs="+", type=Path, help="run folders or mlperf.log files")
    parser.add_argument(
        "--runs", type=int, default=REQUIRED_RUNS, help="trials the score needs (MLPerf SSD: 5)"
    )
    args = parser.parse_args(argv)
    try:
        trials = [read_trial(path) for path in args.trials]
    except LogError as error:
        print(f"mlperf_score: {error}", file=sys.stderr)
        return 2
    for trial in trials:
        time = f"{trial.minutes:8.3f} min" if trial.minutes is not None else "       - min"
        note = " (resumed: not a valid result)" if trial.resumed else ""
        print(f"{time}  {trial.status:<10} {trial.path}{note}")
    try:
        score = mlperf_score(
            [t.minutes if t.converged else None for t in trials], required_runs=args.runs
        )
    except ScoreError as error:
        print(f"no score: {error}")
        return 1
    print(
        f"score: {score:.3f} minutes (mean of {args.runs - 2} after dropping fastest and slowest)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
