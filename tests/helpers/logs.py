"""Reading what a run wrote: ``:::MLLOG`` lines and ``metrics.jsonl`` records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MLLOG_PREFIX = ":::MLLOG "


def mllog_records(text: str) -> list[dict[str, Any]]:
    """Every ``:::MLLOG {json}`` line of ``text`` (a log file or captured output), in order."""
    return [
        json.loads(line[line.index(MLLOG_PREFIX) + len(MLLOG_PREFIX) :])
        for line in text.splitlines()
        if MLLOG_PREFIX in line
    ]


def read_mllog(path: Path) -> list[dict[str, Any]]:
    """The records of an ``mlperf.log`` file."""
    return mllog_records(Path(path).read_text())


def events(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The records with MLLOG key ``key``."""
    return [r for r in records if r["key"] == key]


def epoch_nums(records: list[dict[str, Any]], key: str) -> list[int]:
    """``metadata.epoch_num`` of every record with key ``key``."""
    return [r["metadata"]["epoch_num"] for r in events(records, key)]


def read_metrics(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (only those of ``kind``, when given)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
