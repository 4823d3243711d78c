"""`metrics.jsonl` in the run folder: one JSON object per logging step and per evaluation.

Records (rank 0 writes; the file is appended to, so a resumed run continues it):

- training, every `logging.log_every` steps: `{"kind": "train", "step", "epoch", "loss":
  {"total", "loc", "conf", ...}, "lr", "images_per_sec", "data_wait_share", "memory_gib",
  "time", ...extra}`;
- evaluation: `{"kind": "eval", "epoch" (epochs finished), "step", "map", "stats" (the 12 COCO
  numbers), "per_class_ap" ({category name: AP @[.50:.95]}, -1 for a category without ground
  truth; absent when eval.per_class is off), "time"}`;
- data counts (at the end of a run, and whenever the trainer asks): `{"kind": "data", "step",
  "train": {"images", "bad_image", "dropped_boxes", "size_mismatch", "index_*"}, "val":
  {"bad_image", "size_mismatch"}, "time"}` (the loaders' `stats()`, totals so far).

`time` is seconds since the Unix epoch. `ThroughputMeter` measures img/s and the share of wall
time spent waiting for data between two logging steps without any device synchronisation;
`memory_gib` reports peak device memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssd_train.resilience.environment import write_failure

METRICS_FILE = "metrics.jsonl"


@dataclass
class StepMetrics:
    """One logging step. `step`: optimiser steps done (global); `epoch`: 0-based epoch."""

    step: int
    epoch: int
    loss: Mapping[str, float]
    lr: float
    images_per_sec: float
    data_wait_share: float
    memory_gib: float | None = None
    time: float = field(default_factory=time.time)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class EvalMetrics:
    """One evaluation. `epoch`: epochs finished when the model was evaluated; `map`: box AP."""

    epoch: int
    map: float
    stats: list[float]
    step: int | None = None
    time: float = field(default_factory=time.time)
    per_class_ap: Mapping[str, float] | None = None


def _finite_or_none(value: float | None) -> float | None:
    # JSON has no NaN/Infinity; a non-finite loss is written as null and flagged
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class MetricsWriter:
    """Appends records to `<run_dir>/metrics.jsonl` (rank 0; other ranks write nothing)."""

    def __init__(self, run_dir: Path | str, *, rank: int = 0) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = rank == 0
        self._file = None
        if self.enabled:
            with _write_errors(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            if self.enabled:
                raise RuntimeError(f"{self.path} is closed")
            return
        line = json.dumps(record, allow_nan=False) + "\n"
        with _write_errors(self.path):
            self._file.write(line)
            self._file.flush()

    def log_step(self, m: StepMetrics) -> None:
        loss = {name: _finite_or_none(v) for name, v in m.loss.items()}
        record: dict[str, Any] = {
            "kind": "train",
            "step": int(m.step),
            "epoch": int(m.epoch),
            "loss": loss,
            "lr": float(m.lr),
            "images_per_sec": _finite_or_none(m.images_per_sec),
            "data_wait_share": _finite_or_none(m.data_wait_share),
            "memory_gib": _finite_or_none(m.memory_gib),
            "time": float(m.time),
        }
        if any(v is None for v in loss.values()):
            record["non_finite_loss"] = True
        record.update({k: v for k, v in m.extra.items() if k not in record})
        self._write(record)

    def log_eval(self, m: EvalMetrics) -> None:
        if len(m.stats) != 12:
            raise ValueError(f"expected the 12 COCO stats, got {len(m.stats)}")
        record = {"kind": "eval", **asdict(m)}
        record["map"] = _finite_or_none(m.map)
        record["stats"] = [_finite_or_none(s) for s in m.stats]
        if m.per_class_ap is None:
            del record["per_class_ap"]
        else:
            record["per_class_ap"] = {k: _finite_or_none(v) for k, v in m.per_class_ap.items()}
        self._write(record)

    def log_data(
        self,
        *,
        train: Mapping[str, int] | None,
        val: Mapping[str, int] | None,
        step: int | None = None,
    ) -> None:
        """The data loaders' counters (skipped images, dropped boxes per kind)."""
        record: dict[str, Any] = {"kind": "data", "step": step}
        record["train"] = None if train is None else {k: int(v) for k, v in train.items()}
        record["val"] = None if val is None else {k: int(v) for k, v in val.items()}
        record["time"] = time.time()
        self._write(record)

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with _write_errors(self.path):
                file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """Turn a write error of the environment (disk full, permission) into an EnvironmentFailure
    naming ``path``."""
    try:
        yield
    except OSError as error:
        failure = write_failure(path, error, what="metrics file")
        if failure is None:
            raise
        raise failure from error


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl (or of the run folder holding one).

    A torn last line (the process died mid-write) is ignored; a bad line elsewhere is an error.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}, line {number}: not a JSON object ({err})") from err
    return records


class ThroughputMeter:
    """Images per second and data-wait share over the window since the last `read()`.

    Per step: `add_data_wait(seconds spent in next(loader))` and `add_step(images)`; on a
    logging step, after the host sync that reads the losses, `read()` closes the window. On
    CUDA the steps run asynchronously, so only windows that end at a sync are accurate: read
    the meter on logging steps only.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self._start = self._clock()
        self._images = 0
        self._wait = 0.0

    def add_data_wait(self, seconds: float) -> None:
        self._wait += seconds

    def add_step(self, images: int) -> None:
        self._images += images

    def read(self) -> tuple[float, float]:
        """(images per second, share of the window spent waiting for data in [0, 1])."""
        elapsed = max(self._clock() - self._start, 1e-9)
        result = (self._images / elapsed, min(self._wait / elapsed, 1.0))
        self.reset()
        return result


def peak_memory_gib(device: torch.device | str) -> float:
    """Peak memory since the last call: CUDA allocator peak (then reset), else the process RSS peak."""
    device = torch.device(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
