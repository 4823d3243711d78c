"""Run the official MLPerf compliance checker (`mlperf_logging.compliance_checker`) on a log.

`check_log(path, ruleset="1.0.0")` returns the checker's verdict and its messages; it is the
same check as `python -m mlperf_logging.compliance_checker --usage training --ruleset 1.0.0 LOG`
(which this module's `main` mirrors: `python -m ssd_train.report.compliance LOG [--ruleset 0.7.0]`).
The checker itself reads the division from the log's `submission_division` line; `division`
additionally asserts which one the log claims.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mlperf_logging.compliance_checker import mlp_compliance

USAGE = "training"
SSD_RULESETS = ("0.7.0", "1.0.0", "1.1.0")  # from 2.0.0 on, "ssd" means RetinaNet


def _logged_division(path: Path) -> str | None:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        _, sep, payload = line.partition(":::MLLOG ")
        if sep:
            try:
                record = json.loads(payload)
            except json.JSONDecodeError:
                continue
            if record.get("key") == "submission_division":
                return record.get("value")
    return None


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip())


def check_log(
    path: Path | str, ruleset: str = "1.0.0", division: str | None = None
) -> tuple[bool, list[str]]:
    """(passed, messages) of the official checker for `path` under `ruleset` (training usage).

    `division` ('closed' or 'open'), when given, must equal the log's submission_division;
    otherwise the verdict is False with a message saying so. Messages include the checker's
    warnings (e.g. a key repeated with the same value), which do not fail a log.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MLPerf log {path} does not exist")
    if ruleset not in SSD_RULESETS:
        raise ValueError(f"ruleset {ruleset!r} is not an SSD300 ruleset; use one of {SSD_RULESETS}")

    messages: list[str] = []
    passed = True
    if division is not None:
        logged = _logged_division(path)
        if logged != division:
            passed = False
            messages.append(
                f"{path}: expected submission_division {division!r}, log has {logged!r}"
            )

    # The checker keeps a module-level queue of rule files; start from an empty one.
    mlp_compliance.enqueued_configs.clear()
    checker = mlp_compliance.make_checker(USAGE, ruleset, quiet=False, werror=False)
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)  # the checker reports through the root logger
    try:
        ok = checker.check_file(str(path), f"{USAGE}_{ruleset}/common.yaml")
    finally:
        root.removeHandler(collect)
        mlp_compliance.enqueued_configs.clear()
    messages.extend(m for m in collect.messages if m)
    return passed and bool(ok), messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssd_train.report.compliance",
        description="Check an MLPerf log with the official compliance checker.",
    )
    parser.add_argument("log", type=Path, help="mlperf.log of a run folder")
    parser.add_argument("--ruleset", default="1.0.0", choices=SSD_RULESETS)
    parser.add_argument("--division", choices=("closed", "open"), default=None)
    args = parser.parse_args(argv)
    ok, messages = check_log(args.log, args.ruleset, args.division)
    for message in messages:
        print(message)
    print(f"{args.log}: {'PASSED' if ok else 'FAILED'} (training ruleset {args.ruleset})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
