"""End to end: the MLPerf log of a short real run (`python -m ssd_train`) passes the checker, and
its clock is NVIDIA v0.7's: 10 training images in batches of 4 (not a multiple), so epochs
straddle batches and epoch e starts at iteration ceil(e * 10 / 4); after the warm-up the LR is
held at base * (W - 1) / W."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ssd_train.report.compliance import check_log


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a hang guard
def test_short_synthetic_run_logs_open_division_passing_1_0_0(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "--run-dir", str(run_dir),
        "--synthetic.cache-dir", str(tmp_path / "synthetic"),
        "--synthetic.train-images", "10",
        "--synthetic.val-images", "4",
        "--data.batch-size", "4",
        "--data.num-workers", "0",
        "--model.backbone-weights", "none",
        "--compile", "false",
        "--schedule.max-epochs", "3",
        "--schedule.eval-epochs", "[3]",
        "--schedule.warmup-iterations", "4",
        "--checkpoint.enabled", "false",
        "--logging.log-every", "1",
        "--logging.progress", "lines",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", "ssd_train", *args],
        capture_output=True, text=True, env=env, timeout=1150,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    log = run_dir / "mlperf.log"
    records = [json.loads(line[len(":::MLLOG ") :]) for line in log.read_text().splitlines()]
    values = {r["key"]: r for r in records}
    assert values["submission_division"]["value"] == "open"  # synthetic data: open division
    assert values["run_stop"]["metadata"]["status"] == "aborted"  # target not reached
    assert values["train_samples"]["value"] == 10
    assert values["eval_accuracy"]["metadata"]["epoch_num"] == 3
    # NVIDIA's epoch clock: exactly max_epochs epochs, epoch e starting at ceil(e * N / batch)
    starts = [r["metadata"] for r in records if r["key"] == "epoch_start"]
    assert [m["epoch_num"] for m in starts] == [1, 2, 3]
    assert [m["current_iter_num"] for m in starts] == [math.ceil(e * 10 / 4) for e in range(3)]
    stops = [r["metadata"]["current_iter_num"] for r in records if r["key"] == "epoch_stop"]
    assert stops == [math.ceil(e * 10 / 4) for e in range(1, 4)]
    # the LR per step from metrics.jsonl: linear warm-up over W = 4 steps, then held at base*3/4
    base = values["opt_base_learning_rate"]["value"]
    lrs = {
        r["step"]: r["lr"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if r.get("kind") == "train"
    }
    assert sorted(lrs) == list(range(1, 9))  # 8 steps: ceil(3 * 10 / 4)
    for step, lr in lrs.items():  # the record of step s is the LR step s - 1 used
        expected = base * min(step - 1, 3) / 4
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15), (step, lr, expected)
    keys = [r["key"] for r in records]
    assert keys.index("run_start") < keys.index("train_samples")  # data only after run_start
    ok, messages = check_log(log, "1.0.0", division="open")
    assert ok, messages
    # the MLPerf lines go to mlperf.log only (logging.mlperf.echo_stdout is off by default)
    assert not any(":::MLLOG" in line for line in done.stdout.splitlines())
    # exported weights carry the dataset's categories (file order: label i is entry i - 1)
    import torch

    meta = torch.load(run_dir / "last.pt", weights_only=True)["metadata"]
    val_json = json.loads(
        next((tmp_path / "synthetic").rglob("instances_val2017.json")).read_text()
    )
    assert [c["id"] for c in meta["categories"]] == [c["id"] for c in val_json["categories"]]
    # and the rest of the run folder
    for name in ("metrics.jsonl", "results.png", "train_batch.jpg", "val_predictions.jpg"):
        assert (run_dir / name).is_file(), name
