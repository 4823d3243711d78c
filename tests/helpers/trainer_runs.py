"""Runs of the real ``Trainer`` in the test process: a tiny stand-in network, a synthetic dataset
of 8 training and 4 validation images (2 steps per epoch), and optionally scripted mAP values."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ssd_eval.result import EvalResult
from ssd_train import trainer as trainer_module
from ssd_train.dataset import prepare_dataset
from ssd_train.run_setup import RunOutcome
from ssd_train.settings import Settings, load_settings
from ssd_train.trainer import Trainer
from ssd_train.validation import Evaluation

from tests.helpers.logs import read_mllog
from tests.helpers.standin import tiny_detector


def clear_ssd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every ``SSD_*`` variable, so that only a test's own settings apply."""
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


def script_evaluations(
    monkeypatch: pytest.MonkeyPatch, maps: dict[int, float], *, asynchronous: bool = False
) -> None:
    """Make the trainer's evaluations :class:`ScriptedEvaluation` with these mAP values."""
    monkeypatch.setattr(ScriptedEvaluation, "MAPS", maps)
    monkeypatch.setattr(ScriptedEvaluation, "ASYNC", asynchronous)
    monkeypatch.setattr(ScriptedEvaluation, "calls", [])
    monkeypatch.setattr(trainer_module, "Evaluation", ScriptedEvaluation)


def small_run_args(run_dir: Path, cache: Path) -> list[str]:
    """Command-line settings of a small run: 8 + 4 synthetic images, batch 4, evaluation after
    every epoch, 4 epochs, a log line every step, no checkpoints, no plots, at most 24 boxes per
    image (matching cost grows with it; override as needed)."""
    return [
        "--run-dir", str(run_dir), "--seed", "1",
        "--synthetic.cache-dir", str(cache), "--synthetic.train-images", "8",
        "--synthetic.val-images", "4", "--data.batch-size", "4", "--data.eval-batch-size", "4",
        "--data.num-workers", "0", "--schedule.warmup-iterations", "2", "--schedule.eval-epochs", "[1]",
        "--schedule.eval-interval", "1", "--schedule.max-epochs", "4", "--logging.log-every", "1",
        "--logging.progress", "lines", "--checkpoint.every-steps", "0",
        "--checkpoint.at-eval-epochs", "false", "--num-threads", "1", "--data.max-boxes", "24",
        "--logging.plots", "false",
    ]  # fmt: skip


def small_settings(run_dir: Path, cache: Path, *extra: str) -> tuple[Settings, bool]:
    """Resolved settings of :func:`small_run_args` with ``extra`` (``--name value`` pairs)
    replacing those of the same name (list settings given twice would be joined)."""
    base = small_run_args(run_dir, cache)
    names = set(extra[::2])
    kept = [a for i in range(0, len(base), 2) if base[i] not in names for a in base[i : i + 2]]
    return prepare_dataset(load_settings([*kept, *extra]), progress=False)


@dataclass
class TrainerRun:
    """What a finished run left: its outcome, MLPerf records and, if asked, the final state."""

    outcome: RunOutcome
    mllog: list[dict[str, Any]]
    state: dict[str, Any] | None
    learning_rates: list[Any]


def run_trainer(
    run_dir: Path, cache: Path, *extra: str, keep_state: bool = False, synthetic: bool = True
) -> TrainerRun:
    """Build a ``Trainer`` with the tiny stand-in network, train, close; the run's results.

    ``synthetic``: whether the settings must resolve to the synthetic dataset (else ``extra``
    names a COCO-format folder).
    """
    settings, is_synthetic = small_settings(run_dir, cache, *extra)
    assert is_synthetic == synthetic
    trainer = Trainer(settings, synthetic_data=synthetic, detector_factory=tiny_detector)
    try:
        outcome = trainer.train()
        state = trainer.state_dict() if keep_state else None
        lrs = [group["lr"] for group in trainer.optimizer.param_groups]
    finally:
        trainer.close()
    return TrainerRun(outcome, read_mllog(outcome.run_dir / "mlperf.log"), state, lrs)
