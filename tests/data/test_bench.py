"""``ssd-data bench``: the table, and both pipelines on a few generated images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ssd_data.bench import Result, format_table, main
from ssd_data.bench_data import write_bench_dataset


def test_table_speed_up_is_per_worker_relative_to_the_first_row() -> None:
    table = format_table(
        [Result("base", 2, "process", 100.0), Result("ours", 4, "thread", 600.0)]
    ).splitlines()
    assert table[0].split()[:3] == ["pipeline", "workers", "type"]
    assert table[2].split()[-3:] == ["100.0", "50.0", "1.00x"]
    assert table[3].split()[-3:] == ["600.0", "150.0", "3.00x"]  # 150 / 50


def test_bench_dataset_is_coco_like(tmp_path: Path) -> None:
    kb = write_bench_dataset(tmp_path, 6, unique=3)
    data = json.loads((tmp_path / "annotations/instances_train2017.json").read_text())
    assert len(data["images"]) == 6 and len(data["categories"]) == 80
    assert all(max(im["width"], im["height"]) >= 427 for im in data["images"])
    assert 40 < kb < 400
    assert {a["image_id"] for a in data["annotations"]} == {1, 2, 3, 4, 5, 6}


def test_bench_runs_both_pipelines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = "--images 12 --batch-size 4 --workers 1 --repeats 1 --fidelity 3 --worker-type thread"
    assert main([*argv.split(), "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith("x")]
    assert [r.split("  ")[0] for r in rows] == ["torchvision v2 + DataLoader", "ssd_data (fast)"]
    assert all(float(r.split()[-2]) > 0 for r in rows)
    line = next(x for x in out.splitlines() if x.startswith("fast vs reference"))
    difference, change = (float(v) for v in re.findall(r"\d+\.\d+", line))
    # the fast jitter is much closer to the reference than the jitter is to no jitter
    assert 0 < difference < change / 2
