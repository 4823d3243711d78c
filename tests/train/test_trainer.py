"""The real ``Trainer``'s loop, schedule, stopping rules and MLPerf log, in seconds.

Training steps, data, logs, checkpoints and exported weights are real (a synthetic dataset of a
few images, the real ``Trainer`` with a tiny stand-in network, ``tests/helpers/standin.py``); where
a test is about scheduling, the mAP values are scripted, so it can say exactly when the run must
stop. The one slow end-to-end learning run is ``test_default_job.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from ssd_data import generate_synthetic_coco
from ssd_train.report.compliance import check_log

from tests.helpers.logs import epoch_nums, events, read_metrics
from tests.helpers.trainer_runs import (
    ScriptedEvaluation,
    clear_ssd_environment,
    run_trainer,
    script_evaluations,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ssd_environment(monkeypatch)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic datasets of the module's runs (generated once per size)."""
    return tmp_path_factory.mktemp("synthetic-cache")


def test_run_stops_at_the_first_evaluation_reaching_the_target(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script_evaluations(monkeypatch, {1: 0.1, 2: 0.3, 3: 0.5})
    run = run_trainer(tmp_path / "run", cache)
    outcome, log = run.outcome, run.mllog
    assert outcome.status == "success" and outcome.epochs_done == 2 and outcome.steps == 4
    assert outcome.best_map == pytest.approx(0.3)
    assert ScriptedEvaluation.calls == [1, 2]
    assert epoch_nums(log, "eval_accuracy") == [1, 2]
    assert epoch_nums(log, "epoch_start") == [1, 2]
    assert events(log, "run_stop")[0]["metadata"]["status"] == "success"
    assert events(log, "submission_division")[0]["value"] == "open"
    config = json.loads((outcome.run_dir / "config.json").read_text())
    assert config["data"]["batch_size"] == 4 and config["run_dir"] == str(outcome.run_dir)
    assert [r["step"] for r in read_metrics(outcome.run_dir, "train")] == [1, 2, 3, 4]
    assert [r["epoch"] for r in read_metrics(outcome.run_dir, "eval")] == [1, 2]
    best = torch.load(outcome.run_dir / "best.pt", weights_only=True)["metadata"]
    assert best["map"] == pytest.approx(0.3) and best["epoch"] == 2
    assert (outcome.run_dir / "last.pt").is_file()


def test_asynchronous_result_stops_the_run_while_training_goes_on(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script_evaluations(monkeypatch, {1: 0.3}, asynchronous=True)
    run = run_trainer(tmp_path / "run", cache)
    # submitted after epoch 1 (step 2); polled at steps 3 and 4; arrives at step 4 -> stop there
    assert run.outcome.status == "success" and run.outcome.steps == 4
    assert run.outcome.epochs_done == 1
    assert ScriptedEvaluation.calls == [1]
    accuracy = events(run.mllog, "eval_accuracy")
    assert epoch_nums(run.mllog, "eval_accuracy") == [1]
    assert accuracy[0]["value"] == pytest.approx(0.3)
    assert epoch_nums(run.mllog, "epoch_stop") == [1]  # epoch 2 unfinished
    assert events(run.mllog, "run_stop")[0]["metadata"]["status"] == "success"


def test_run_that_misses_the_target_is_aborted_after_max_epochs(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script_evaluations(monkeypatch, {1: 0.1, 2: 0.2}, asynchronous=True)
    run = run_trainer(tmp_path / "run", cache, "--schedule.max-epochs", "2")
    assert run.outcome.status == "aborted" and run.outcome.reason == "max_epochs"
    assert run.outcome.epochs_done == 2 and run.outcome.steps == 4
    assert epoch_nums(run.mllog, "eval_accuracy") == [1, 2]  # both waited for
    assert events(run.mllog, "run_stop")[0]["metadata"]["status"] == "aborted"


def test_max_steps_stops_inside_an_epoch_with_a_checkpoint(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script_evaluations(monkeypatch, {})
    run = run_trainer(
        tmp_path / "run", cache, "--schedule.max-steps", "3", "--checkpoint.enabled", "true",
        "--checkpoint.asynchronous", "false",
    )  # fmt: skip
    assert run.outcome.status == "aborted" and run.outcome.reason == "max_steps"
    assert run.outcome.steps == 3 and run.outcome.epochs_done == 1
    assert ScriptedEvaluation.calls == [1]
    assert epoch_nums(run.mllog, "epoch_start") == [1, 2]
    assert epoch_nums(run.mllog, "epoch_stop") == [1]  # epoch 2 was cut at its first step
    assert sorted(p.name for p in (run.outcome.run_dir / "checkpoints").glob("step-*")) == [
        "step-3"
    ]
    assert [r["step"] for r in read_metrics(run.outcome.run_dir, "train")] == [1, 2, 3]


def test_evaluation_epochs_blocks_and_the_mlperf_order(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval_epochs [2] then every 3 epochs up to 7: evaluations after 2 and 5 (not 7); the blocks
    between them and every record in MLPerf's order; the log passes the official checker."""
    script_evaluations(monkeypatch, {})
    run = run_trainer(
        tmp_path / "run", cache, "--schedule.eval-epochs", "[2]", "--schedule.eval-interval", "3",
        "--schedule.max-epochs", "7", "--logging.log-every", "5",
    )  # fmt: skip
    assert ScriptedEvaluation.calls == [2, 5]
    log = run.mllog
    assert [
        (r["metadata"]["first_epoch_num"], r["metadata"]["epoch_count"])
        for r in events(log, "block_start")
    ] == [(1, 2), (3, 3), (6, 2)]
    keys = [r["key"] for r in log]
    start = keys.index("init_start")
    assert start < keys.index("init_stop") < keys.index("run_start")
    assert keys.index("run_start") < keys.index("train_samples") < keys.index("block_start")
    body = [
        (r["key"], r["metadata"].get("epoch_num", r["metadata"].get("first_epoch_num")))
        for r in log[keys.index("block_start") :]
        if r["key"] in {"block_start", "block_stop", "epoch_start", "epoch_stop", "eval_start",
                        "eval_accuracy", "eval_stop", "run_stop"}
    ]  # fmt: skip
    expected = []
    for first, last, evaluated in ((1, 2, True), (3, 5, True), (6, 7, False)):
        expected.append(("block_start", first))
        for e in range(first, last + 1):
            expected += [("epoch_start", e), ("epoch_stop", e)]
        expected.append(("block_stop", first))
        if evaluated:
            expected += [("eval_start", last), ("eval_accuracy", last), ("eval_stop", last)]
    assert body == [*expected, ("run_stop", None)]
    assert keys[-1] == "run_stop" and events(log, "run_stop")[0]["metadata"]["status"] == "aborted"
    ok, messages = check_log(run.outcome.run_dir / "mlperf.log", "1.0.0", division="open")
    assert ok, messages


def test_epoch_clock_and_learning_rate_of_a_batch_that_does_not_divide_the_epoch(
    tmp_path: Path, cache: Path
) -> None:
    """10 training images in batches of 4: epoch e starts at step ceil(e * 10 / 4) (NVIDIA v0.7's
    clock); the LR warms up linearly over W = 4 steps, then holds at base * (W - 1) / W; the run
    folder holds what a user reads, and the exported weights carry the dataset's categories."""
    run = run_trainer(
        tmp_path / "run", cache, "--synthetic.train-images", "10", "--schedule.max-epochs", "3",
        "--schedule.eval-epochs", "[3]", "--schedule.warmup-iterations", "4",
        "--logging.plots", "true",
    )  # fmt: skip
    log, run_dir = run.mllog, run.outcome.run_dir
    values = {r["key"]: r for r in log}
    assert values["train_samples"]["value"] == 10
    assert values["eval_accuracy"]["metadata"]["epoch_num"] == 3  # a real (tiny) score
    starts = [r["metadata"]["current_iter_num"] for r in events(log, "epoch_start")]
    assert starts == [math.ceil(e * 10 / 4) for e in range(3)]
    stops = [r["metadata"]["current_iter_num"] for r in events(log, "epoch_stop")]
    assert stops == [math.ceil(e * 10 / 4) for e in range(1, 4)]
    base = values["opt_base_learning_rate"]["value"]
    lrs = {r["step"]: r["lr"] for r in read_metrics(run_dir, "train")}
    assert sorted(lrs) == list(range(1, 9))  # 8 steps: ceil(3 * 10 / 4)
    for step, lr in lrs.items():  # the record of step s is the LR step s - 1 used
        expected = base * min(step - 1, 3) / 4
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15), (step, lr, expected)
    meta = torch.load(run_dir / "last.pt", weights_only=True)["metadata"]
    val_json = json.loads(next(cache.rglob("instances_val2017.json")).read_text())
    assert [c["id"] for c in meta["categories"]] == [c["id"] for c in val_json["categories"]]
    for name in ("metrics.jsonl", "results.png", "train_batch.jpg", "val_predictions.jpg"):
        assert (run_dir / name).is_file(), name


def test_run_reaching_target_on_real_data_logs_closed_division_passing_0_7_0_and_1_0_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A COCO-format folder (not the synthetic flag) and closed-rule hyperparameters: the MLPerf
    evaluation schedule (40, 50, 55, then every 5), the stop at the first mAP >= 0.23 and a log
    the official checker's closed rules accept."""
    root = generate_synthetic_coco(
        tmp_path / "syn", train_images=4, val_images=4, seed=5, categories="used", progress=False
    )
    script_evaluations(monkeypatch, {40: 0.036, 50: 0.136, 55: 0.229, 60: 0.238})
    run = run_trainer(
        tmp_path / "run", tmp_path / "unused", "--data.root", str(root),
        "--optim.lr-per-32", "0.16", "--model.num-classes", "11",
        "--schedule.max-epochs", "80", "--schedule.eval-epochs", "[40, 50, 55]",
        "--schedule.eval-interval", "5", "--schedule.warmup-iterations", "20",
        "--schedule.decay-epochs", "[44, 55]", "--schedule.target-map", "0.23",
        "--logging.mlperf.division", "closed",
        "--logging.log-every", "20", synthetic=False,
    )  # fmt: skip
    assert run.outcome.status == "success" and run.outcome.epochs_done == 60
    assert ScriptedEvaluation.calls == [40, 50, 55, 60]
    values = {r["key"]: r for r in run.mllog}
    assert values["submission_division"]["value"] == "closed"
    assert values["run_stop"]["metadata"]["status"] == "success"
    assert [a["value"] for a in events(run.mllog, "eval_accuracy")] == pytest.approx(
        [0.036, 0.136, 0.229, 0.238]
    )
    for ruleset in ("0.7.0", "1.0.0"):
        ok, messages = check_log(run.outcome.run_dir / "mlperf.log", ruleset, division="closed")
        assert ok, (ruleset, messages)
