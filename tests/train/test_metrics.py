"""metrics.jsonl records, reading them back, the throughput meter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from ssd_train.report.metrics import (
    EvalMetrics,
    MetricsWriter,
    StepMetrics,
    ThroughputMeter,
    peak_memory_gib,
    read_metrics,
)


def step(n: int, total: float = 5.0) -> StepMetrics:
    return StepMetrics(
        step=n,
        epoch=n // 100,
        loss={"total": total, "loc": 1.5, "conf": total - 1.5},
        lr=0.01 * n / 1000,
        images_per_sec=31.5,
        data_wait_share=0.25,
        memory_gib=1.25,
        time=1000.0 + n,
        extra={"grad_norm": 3.0},
    )


def test_records_and_append_on_resume(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as writer:
        writer.log_step(step(10))
        writer.log_eval(EvalMetrics(epoch=1, map=0.125, stats=[0.125] + [0.5] * 11, step=10))
    with MetricsWriter(tmp_path) as writer:  # a resumed segment continues the same file
        writer.log_step(step(20))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first == {
        "kind": "train",
        "step": 10,
        "epoch": 0,
        "loss": {"total": 5.0, "loc": 1.5, "conf": 3.5},
        "lr": pytest.approx(1e-4),
        "images_per_sec": 31.5,
        "data_wait_share": 0.25,
        "memory_gib": 1.25,
        "time": 1010.0,
        "grad_norm": 3.0,
    }
    ev = json.loads(lines[1])
    assert (ev["kind"], ev["epoch"], ev["map"], ev["step"]) == ("eval", 1, 0.125, 10)
    assert len(ev["stats"]) == 12
    assert [r["step"] for r in read_metrics(tmp_path) if r["kind"] == "train"] == [10, 20]


def test_non_finite_loss_is_flagged_not_invalid_json(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as writer:
        writer.log_step(step(1, total=math.nan))
    (record,) = read_metrics(tmp_path / "metrics.jsonl")
    assert record["loss"]["total"] is None
    assert record["non_finite_loss"] is True


def test_eval_needs_twelve_stats(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as writer, pytest.raises(ValueError, match="12 COCO stats"):
        writer.log_eval(EvalMetrics(epoch=1, map=0.1, stats=[0.1] * 6))


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, rank=3) as writer:
        writer.log_step(step(1))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_read_metrics_torn_last_line_and_corrupt_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "tra')
    assert read_metrics(path) == [{"kind": "train", "step": 1}]
    path.write_text('{"kind": "train", "step": 1}\nnot json\n{"kind": "train", "step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2"):
        read_metrics(path)
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        read_metrics(tmp_path / "missing")


def test_throughput_meter_window() -> None:
    now = [100.0]
    meter = ThroughputMeter(clock=lambda: now[0])
    for _ in range(4):  # 4 steps of 8 images, each 0.5 s of which 0.125 s waiting for data
        meter.add_data_wait(0.125)
        meter.add_step(8)
        now[0] += 0.5
    images_per_sec, wait_share = meter.read()
    assert images_per_sec == pytest.approx(32 / 2.0)
    assert wait_share == pytest.approx(0.5 / 2.0)
    now[0] += 1.0
    meter.add_step(4)
    assert meter.read() == pytest.approx((4.0, 0.0))  # a fresh window after read()


def test_peak_memory_cpu_is_process_peak() -> None:
    # the kernel's own record of this process's peak resident set, in KiB
    status = Path("/proc/self/status").read_text().splitlines()
    (vm_hwm_kib,) = [int(line.split()[1]) for line in status if line.startswith("VmHWM:")]
    assert peak_memory_gib("cpu") == pytest.approx(vm_hwm_kib / 2**20, rel=0.05)


def test_data_counts_record(tmp_path: Path) -> None:
    train = {"images": 80, "bad_image": 2, "dropped_boxes": 5, "size_mismatch": 1,
             "index_dropped_degenerate_boxes": 3}  # fmt: skip
    with MetricsWriter(tmp_path) as writer:
        writer.log_data(train=train, val={"bad_image": 1, "size_mismatch": 0}, step=10)
    (record,) = read_metrics(tmp_path)
    assert record["kind"] == "data" and record["step"] == 10
    assert record["train"] == train and record["val"] == {"bad_image": 1, "size_mismatch": 0}
    assert isinstance(record["time"], float)
