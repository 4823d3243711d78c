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
    python infra/mlperf_score.py submission/results/dgxa100/ssd  # a folder of result_*.txt

Arguments are run folders (their ``mlperf.log``), folders of ``result_*.txt`` logs (the layout of
an MLPerf submission) or log files. Exit status 0 with a score, 1 when there is none (too few
converged trials), 2 on unreadable input.

Closed-division trial sets also get mlperf-logging's reference-convergence-point (RCP) check
(``mlperf_logging.rcp_checker.check_directory``, the package checker's call, on the trials' logs
copied into one folder as ``result_<i>.txt``), its verdict printed beside the score. Ruleset
``--rcp-ruleset`` (1.0.0, the first with RCPs; SSD RCPs at global batch 1024, 2048, 4096): a batch
with an RCP is checked against it; one between two RCPs against their interpolation; one below 1024
against 1024's (passes only when it converges no faster); one above 4096 is reported as a missing
RCP. The checker's default pass (``pruned_rcps``) drops an RCP that converges slower than the
interpolation of its neighbours: in 1.0.0 that is 2048's (65 epochs vs ~62.5 interpolated), so
batch 2048 is checked against the interpolation; ``--rcp-pass full_rcps`` uses every RCP.
The RCP check does not change the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import statistics
import sys
import tempfile
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


def expand_trials(paths: Sequence[Path]) -> list[Path]:
    """Arguments -> trial logs/run folders: a folder without ``mlperf.log`` but with
    ``result_*.txt`` files stands for those files (sorted)."""
    out: list[Path] = []
    for path in paths:
        results = sorted(path.glob("result_*.txt")) if path.is_dir() else []
        if path.is_dir() and not (path / "mlperf.log").is_file() and results:
            out.extend(results)
        else:
            out.append(path)
    return out


def log_path(path: Path) -> Path:
    """The log file of a trial argument (run folder -> its mlperf.log)."""
    return path / "mlperf.log" if path.is_dir() else path


def read_trial(path: Path) -> Trial:
    """A trial from its run folder (``mlperf.log`` inside) or its log file."""
    log = log_path(path)
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


@dataclass(frozen=True)
class RcpVerdict:
    """The RCP checker's answer for a set of trials."""

    passed: bool
    message: str  # the checker's own words ("RCP found", "RCP Interpolation", "Missing RCP, ...")
    norm_factor: float  # score normalisation (> 1: converged faster than the RCP mean)

    def describe(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        norm = f", score normalisation x{self.norm_factor:.4f}" if self.norm_factor > 1.0 else ""
        return f"{verdict} ({self.message}{norm})"


def log_values(log: Path, keys: Sequence[str]) -> dict[str, object]:
    """First value of each of ``keys`` among a log's MLLOG events (missing keys absent)."""
    found: dict[str, object] = {}
    for event in read_events(log):
        if event["key"] in keys and event["key"] not in found:
            found[event["key"]] = event.get("value")
    return found


def rcp_check(
    logs: Sequence[Path], ruleset: str = "1.0.0", rcp_pass: str = "pruned_rcps"
) -> RcpVerdict:
    """Run mlperf-logging's RCP checker on these trial logs (copied as ``result_<i>.txt``).

    Raises ImportError when mlperf-logging is not installed.
    """
    from mlperf_logging.rcp_checker import rcp_checker

    with tempfile.TemporaryDirectory(prefix="rcp-") as folder:
        for i, log in enumerate(logs):
            shutil.copyfile(log, Path(folder) / f"result_{i}.txt")
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the checker logs its reasoning at INFO/WARNING
        try:
            passed, message, norm = rcp_checker.check_directory(
                folder, "training", ruleset, False, False, rcp_pass=rcp_pass
            )
        finally:
            quiet.setLevel(level)
    return RcpVerdict(bool(passed), str(message), float(norm))


def rcp_line(logs: Sequence[Path], ruleset: str, rcp_pass: str) -> str:
    """One line: the RCP verdict, or why there is none (open division, no checker)."""
    values = [log_values(log, ("submission_division", "global_batch_size")) for log in logs]
    divisions = {str(v.get("submission_division", "unknown")) for v in values}
    if divisions != {"closed"}:
        return f"RCP check: not applicable (division {', '.join(sorted(divisions))}; closed only)"
    try:
        verdict = rcp_check(logs, ruleset, rcp_pass)
    except ImportError:
        return "RCP check: skipped (mlperf-logging is not installed: pip install mlperf-logging)"
    batch = values[0].get("global_batch_size")
    return f"RCP check (ruleset {ruleset}, global batch {batch}): {verdict.describe()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trials", nargs="+", type=Path, help="run folders or mlperf.log files")
    parser.add_argument(
        "--runs", type=int, default=REQUIRED_RUNS, help="trials the score needs (MLPerf SSD: 5)"
    )
    parser.add_argument(
        "--rcp-ruleset", default="1.0.0", help="ruleset of the RCP check (1.0.0: SSD's RCPs)"
    )
    parser.add_argument(
        "--rcp-pass",
        choices=("pruned_rcps", "full_rcps"),
        default="pruned_rcps",
        help="the RCP checker's pass (pruned_rcps, as the package checker)",
    )
    args = parser.parse_args(argv)
    try:
        trials = [read_trial(path) for path in expand_trials(args.trials)]
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
        with contextlib.suppress(LogError):
            print(rcp_line([t.path for t in trials], args.rcp_ruleset, args.rcp_pass))
        return 1
    print(
        f"score: {score:.3f} minutes (mean of {args.runs - 2} after dropping fastest and slowest)"
    )
    print(rcp_line([t.path for t in trials], args.rcp_ruleset, args.rcp_pass))
    return 0


if __name__ == "__main__":
    sys.exit(main())
