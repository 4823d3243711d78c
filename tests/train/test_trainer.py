"""The training loop's schedule and stopping rule, with scripted evaluation results.

Training steps, data, logs and checkpoints are real (a tiny synthetic dataset, 2 steps per
epoch); only the mAP values are scripted, so the tests can say exactly when the run must stop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ssd_eval.result import EvalResult
from ssd_train import trainer as trainer_module
from ssd_train.__main__ import main
from ssd_train.dataset import prepare_dataset
from ssd_train.settings import load_settings
from ssd_train.trainer import Trainer
from ssd_train.validation import Evaluation


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SSD_"):
            monkeypatch.delenv(name)


class ScriptedEvaluation(Evaluation):
    """Real inference; the mAP of the evaluation after epoch e is MAPS[e]. Asynchronous results
    arrive at the second poll after their submission."""

    MAPS: ClassVar[dict[int, float]] = {}
    ASYNC = False
    calls: ClassVar[list[int]] = []

    def run(
        self, model: Any, epochs_done: int, *, asynchronous: bool | None = None
    ) -> EvalResult | None:
        self.infer(model)
        self.evaluator.reset()
        type(self).calls.append(epochs_done)
        result = EvalResult.from_stats([self.MAPS.get(epochs_done, 0.0)] + [0.0] * 11, epochs_done)
        if not self.ASYNC:
            return result
        self._queue = [*getattr(self, "_queue", []), [result, 0]]
        return None

    def poll(self, *, wait: bool = False) -> list[EvalResult]:
        queue = getattr(self, "_queue", [])
        for item in queue:
            item[1] += 1
        ready = [r for r, polls in queue if wait or polls >= 2]
        self._queue = [item for item in queue if item[0] not in ready]
        return ready


def _settings(tmp_path: Path, *extra: str):
    args = [
        "--run-dir", str(tmp_path / "run"), "--seed", "1",
        "--synthetic.cache-dir", str(tmp_path / "cache"), "--synthetic.train-images", "8",
        "--synthetic.val-images", "4", "--data.batch-size", "4", "--data.eval-batch-size", "4",
        "--data.num-workers", "0", "--schedule.warmup-iterations", "2", "--schedule.eval-epochs", "[1]",
        "--schedule.eval-interval", "1", "--schedule.max-epochs", "4", "--logging.log-every", "1",
        "--logging.progress", "lines", "--checkpoint.every-steps", "0", "--checkpoint.at-eval-epochs", "false",
        "--num-threads", "2", *extra,
    ]  # fmt: skip
    return prepare_dataset(load_settings(args), progress=False)


def _run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    maps: dict[int, float],
    asynchronous: bool,
    *extra: str,
):
    monkeypatch.setattr(ScriptedEvaluation, "MAPS", maps)
    monkeypatch.setattr(ScriptedEvaluation, "ASYNC", asynchronous)
    monkeypatch.setattr(ScriptedEvaluation, "calls", [])
    monkeypatch.setattr(trainer_module, "Evaluation", ScriptedEvaluation)
    settings, synthetic = _settings(tmp_path, *extra)
    assert synthetic
    t = Trainer(settings, synthetic_data=synthetic)
    try:
        outcome = t.train()
    finally:
        t.close()
    log = [
        json.loads(line[len(":::MLLOG ") :])
        for line in (outcome.run_dir / "mlperf.log").read_text().splitlines()
    ]
    return outcome, log


def _events(log: list[dict], key: str) -> list[dict]:
    return [r for r in log if r["key"] == key]


@pytest.mark.slow
def test_run_stops_at_the_first_evaluation_reaching_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome, log = _run(tmp_path, monkeypatch, {1: 0.1, 2: 0.3, 3: 0.5}, asynchronous=False)
    assert outcome.status == "success" and outcome.epochs_done == 2 and outcome.steps == 4
    assert outcome.best_map == pytest.approx(0.3)
    assert ScriptedEvaluation.calls == [1, 2]
    assert [r["metadata"]["epoch_num"] for r in _events(log, "eval_accuracy")] == [1, 2]
    assert [r["metadata"]["epoch_num"] for r in _events(log, "epoch_start")] == [1, 2]
    assert _events(log, "run_stop")[0]["metadata"]["status"] == "success"
    assert _events(log, "submission_division")[0]["value"] == "open"
    config = json.loads((outcome.run_dir / "config.json").read_text())
    assert config["data"]["batch_size"] == 4 and config["run_dir"] == str(outcome.run_dir)
    records = [
        json.loads(line) for line in (outcome.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2]
    assert (outcome.run_dir / "best.pt").is_file() and (outcome.run_dir / "last.pt").is_file()


@pytest.mark.slow
def test_asynchronous_result_stops_the_run_while_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome, log = _run(tmp_path, monkeypatch, {1: 0.3}, asynchronous=True)
    # submitted after epoch 1 (step 2); polled at steps 3 and 4; arrives at step 4 -> stop there
    assert outcome.status == "success" and outcome.steps == 4 and outcome.epochs_done == 1
    assert ScriptedEvaluation.calls == [1]
    acc = _events(log, "eval_accuracy")
    assert [r["metadata"]["epoch_num"] for r in acc] == [1] and acc[0]["value"] == pytest.approx(
        0.3
    )
    assert [r["metadata"]["epoch_num"] for r in _events(log, "epoch_stop")] == [
        1
    ]  # epoch 2 unfinished
    assert _events(log, "run_stop")[0]["metadata"]["status"] == "success"


@pytest.mark.slow
def test_run_that_misses_the_target_is_aborted_after_max_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome, log = _run(tmp_path, monkeypatch, {1: 0.1, 2: 0.2}, True, "--schedule.max-epochs", "2")
    assert (
        outcome.status == "aborted" and outcome.reason == "max_epochs" and outcome.epochs_done == 2
    )
    assert [r["metadata"]["epoch_num"] for r in _events(log, "eval_accuracy")] == [
        1,
        2,
    ]  # both waited for
    assert _events(log, "run_stop")[0]["metadata"]["status"] == "aborted"


@pytest.mark.slow
def test_eval_mode_scores_exported_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    outcome, _ = _run(tmp_path, monkeypatch, {1: 0.0}, False, "--schedule.max-epochs", "1")
    capsys.readouterr()
    args = ["--mode", "eval", "--weights", str(outcome.run_dir / "last.pt"), "--data.root",
            str(next((tmp_path / "cache").glob("synthetic-*"))), "--data.eval-batch-size", "4", "--num-threads", "2"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "COCO box evaluation of weights" in out and "on 4 images" in out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out
