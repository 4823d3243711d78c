"""Exact resume of the real ``Trainer``: a run saved at step k and continued by a new ``Trainer``
ends in the same state, bitwise, as the uninterrupted run.

Both runs use the real loop, loader, evaluation (COCO scoring of 4 validation images), checkpoint
manager and ``Trainer.state_dict`` / ``load_state_dict``; the network is the tiny stand-in, with
BatchNorm and dropout so that buffers and RNG states must come back too. Step k = 3 lies inside
epoch 2 (2 steps per epoch), after the evaluation of epoch 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.logs import read_metrics
from tests.helpers.states import assert_states_equal
from tests.helpers.trainer_runs import clear_ssd_environment, run_trainer

SAVES = ("--checkpoint.enabled", "true", "--checkpoint.asynchronous", "false")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ssd_environment(monkeypatch)


def test_run_resumed_at_step_3_in_a_new_trainer_ends_bitwise_equal(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    whole = run_trainer(tmp_path / "whole", cache, "--schedule.max-steps", "5", *SAVES,
                        keep_state=True)  # fmt: skip
    first = run_trainer(tmp_path / "cut", cache, "--schedule.max-steps", "3", *SAVES)
    assert first.outcome.reason == "max_steps" and first.outcome.steps == 3
    assert (tmp_path / "cut" / "checkpoints" / "step-3").is_dir()
    resumed = run_trainer(tmp_path / "cut", cache, "--schedule.max-steps", "5", *SAVES,
                          keep_state=True)  # fmt: skip
    assert whole.state is not None and resumed.state is not None
    assert resumed.outcome.steps == whole.outcome.steps == 5
    assert resumed.outcome.epochs_done == whole.outcome.epochs_done == 2

    # everything a resume needs: weights, BN buffers, optimiser momenta, RNG states, loader
    # position, LR schedule, progress and the evaluation history
    assert set(whole.state) >= {"model", "optimizer", "rng", "data", "schedule", "progress",
                                "evaluation"}  # fmt: skip
    assert_states_equal(resumed.state, whole.state)
    assert resumed.learning_rates == whole.learning_rates
    history = whole.state["evaluation"]["results"]
    assert [row[0] for row in history] == [1, 2]  # epoch 1 before the cut, epoch 2 after it
    # the continued run trained steps 4 and 5 only, and its losses are the uninterrupted run's
    cut_steps = [r["step"] for r in read_metrics(tmp_path / "cut", "train")]
    assert cut_steps == [1, 2, 3, 4, 5]
    whole_losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "whole", "train")}
    cut_losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "cut", "train")}
    assert cut_losses == whole_losses
