"""A stop request (the stop file, or SIGUSR1) reaching the real ``Trainer`` mid-epoch: it finishes
the step, checkpoints it, writes the ``requeue`` marker for the launcher and ends the run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from ssd_train.trainer import Trainer

from tests.helpers.logs import events
from tests.helpers.trainer_runs import clear_ssd_environment, run_trainer

STOP_AT = 3  # inside epoch 2 (2 steps per epoch)


@pytest.mark.parametrize("how", ["stop_file", "signal"])
def test_stop_request_checkpoints_the_step_and_writes_the_requeue_marker(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_ssd_environment(monkeypatch)
    run_dir = tmp_path / "run"
    step = Trainer.train_step

    def step_then_request(self: Trainer, micro_batches: list) -> object:
        out = step(self, micro_batches)
        if self.step == STOP_AT:
            if how == "stop_file":
                (run_dir / "STOP").touch()
            else:
                signal.raise_signal(signal.SIGUSR1)  # the trainer's handler, not the default
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_request)
    run = run_trainer(
        run_dir, tmp_path / "cache", "--checkpoint.enabled", "true",
        "--checkpoint.asynchronous", "false", "--resilience.preemption.check-every-steps", "1",
    )  # fmt: skip
    assert run.outcome.status == "aborted" and run.outcome.reason == "stop_requested"
    assert run.outcome.steps == STOP_AT
    checkpoint = run_dir / "checkpoints" / f"step-{STOP_AT}"
    assert (checkpoint / "COMPLETE").is_file()
    marker = json.loads((run_dir / "requeue").read_text())
    assert marker["step"] == STOP_AT and marker["checkpoint"] == str(checkpoint)
    assert ("SIGUSR1" if how == "signal" else "stop file") in marker["reason"]
    assert not (run_dir / "STOP").exists()  # consumed
    assert events(run.mllog, "run_stop")[0]["metadata"]["status"] == "aborted"
    # the handlers are restored: the default action of SIGUSR1 is back after close
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.default_int_handler)
