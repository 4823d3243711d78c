"""End to end: the MLPerf log of a short real run (`python -m ssd_train`) passes the checker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ssd_train.report.compliance import check_log


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_short_synthetic_run_logs_open_division_passing_1_0_0(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "--run-dir", str(run_dir),
        "--synthetic.cache-dir", str(tmp_path / "synthetic"),
        "--synthetic.train-images", "8",
        "--synthetic.val-images", "4",
        "--data.batch-size", "4",
        "--model.backbone-weights", "none",
        "--compile", "false",
        "--schedule.max-epochs", "1",
        "--schedule.eval-epochs", "[1]",
        # a learning rate that stays ~0: an untrained model's boxes stay finite
        "--schedule.warmup-iterations", "1000",
        "--logging.log-every", "1",
        "--logging.progress", "lines",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", "ssd_train", *args],
        capture_output=True, text=True, env=env, timeout=580,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    log = run_dir / "mlperf.log"
    records = [json.loads(line[len(":::MLLOG ") :]) for line in log.read_text().splitlines()]
    values = {r["key"]: r for r in records}
    assert values["submission_division"]["value"] == "open"  # synthetic data: open division
    assert values["run_stop"]["metadata"]["status"] == "aborted"  # target not reached
    assert values["train_samples"]["value"] == 8
    assert values["eval_accuracy"]["metadata"]["epoch_num"] == 1
    keys = [r["key"] for r in records]
    assert keys.index("run_start") < keys.index("train_samples")  # data only after run_start
    ok, messages = check_log(log, "1.0.0", division="open")
    assert ok, messages
    # stdout carries the same lines
    assert sum(line.startswith(":::MLLOG ") for line in done.stdout.splitlines()) == len(records)
    # and the rest of the run folder
    for name in ("metrics.jsonl", "results.png", "train_batch.jpg", "val_predictions.jpg"):
        assert (run_dir / name).is_file(), name
