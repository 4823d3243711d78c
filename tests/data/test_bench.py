"""``ssd-data bench``: the table, the JSON, and every pipeline on a few generated images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ssd_data.bench.cli import Result, format_table, main
from ssd_data.bench.data import write_bench_dataset


def test_table_speed_up_is_per_worker_relative_to_the_first_row() -> None:
    table = format_table(
        [
            Result("base", 2, "process", 100.0, 9.0, 1.0),
            Result("ours", 4, "thread", 600.0, 0.5, 2.0, 0.25),
        ]
    ).splitlines()
    assert table[0].split()[:3] == ["pipeline", "workers", "type"]
    assert table[2].split()[3:] == ["100.0", "50.0", "9.00", "1.00", "-", "1.00x"]
    assert table[3].split()[3:] == ["600.0", "150.0", "0.50", "2.00", "0.25", "3.00x"]


def test_bench_dataset_is_coco_like(tmp_path: Path) -> None:
    kb = write_bench_dataset(tmp_path, 6, unique=3)
    data = json.loads((tmp_path / "annotations/instances_train2017.json").read_text())
    assert len(data["images"]) == 6 and len(data["categories"]) == 80
    assert all(max(im["width"], im["height"]) >= 427 for im in data["images"])
    assert 40 < kb < 400
    assert {a["image_id"] for a in data["annotations"]} == {1, 2, 3, 4, 5, 6}


@pytest.mark.parametrize(
    ("worker_type", "names"),
    [
        ("thread", ["torchvision-v2", "cpu-fast", "device"]),
        pytest.param(
            "both",
            ["torchvision-v2", "cpu-fast", "cpu-fast-process", "device", "device-process"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_bench_runs_every_pipeline_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], worker_type: str, names: list[str]
) -> None:
    out_json = tmp_path / "bench.json"
    argv = "--images 8 --batch-size 4 --workers 1 --repeats 1 --fidelity 3 --worker-type"
    data = tmp_path / "data"
    assert main([*argv.split(), worker_type, "--data", str(data), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith("x")]
    assert [r.split()[0] for r in rows] == names
    pipelines = json.loads(out_json.read_text())["pipelines"]
    assert [p["name"] for p in pipelines] == names
    for p in pipelines:
        assert p["img_per_s"] > 0 and p["host_cpu_ms_per_img"] > 0
        assert p["process_cpu_ms_per_img"] is not None
        assert (p["device_ms_per_img"] is not None) == p["name"].startswith("device")
        if p["name"].startswith("device"):  # counted in one untimed batch
            assert p["ops_per_batch"] > 0 and p["syncs_per_batch"] == 0
        else:
            assert p["ops_per_batch"] is None and p["syncs_per_batch"] is None
    counts = json.loads(out_json.read_text())["op_counts"]
    assert [(c["impl"], c["batch_size"]) for c in counts] == [("fast", 4), ("fast", 8)]
    assert counts[0]["ops_per_batch"] == pipelines[-1]["ops_per_batch"]  # the bench batch, 4
    assert all(c["syncs_per_batch"] == 0 for c in counts)
    assert "device path (fast jitter), batch 8:" in out
    by_name = {p["name"]: p for p in pipelines}
    assert by_name["device"]["worker_type"] == "thread"
    if worker_type == "both":
        assert by_name["device-process"]["worker_type"] == "process"
    # the device path's workers only read bytes and draw decisions: far less CPU per image
    assert by_name["device"]["host_cpu_ms_per_img"] < by_name["cpu-fast"]["host_cpu_ms_per_img"] / 3
    line = next(x for x in out.splitlines() if x.startswith("fast vs reference"))
    difference, change = (float(v) for v in re.findall(r"\d+\.\d+", line))
    # the fast jitter is much closer to the reference than the jitter is to no jitter
    assert 0 < difference < change / 2
