"""End to end through the real trainer under torchrun: crash + elastic restart, SIGTERM, requeue, resume, NaN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ssd_train.checkpoint.files import list_checkpoints

from tests.helpers import jobs as h
from tests.helpers.logs import events, read_mllog


def _args(run: Path, cache: Path, max_steps: int) -> list[str]:
    return [
        f"--run-dir={run}", "--seed=3", f"--synthetic.cache-dir={cache}", "--synthetic.train-images=16",
        "--synthetic.val-images=4", "--data.batch-size=2", "--data.eval-batch-size=2", "--data.num-workers=0",
        "--model.backbone-weights=none", f"--schedule.max-steps={max_steps}", "--logging.log-every=1",
        "--checkpoint.every-steps=2", "--resilience.preemption.check-every-steps=1", "--num-threads=1",
    ]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSD_")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", **extra})
    return env


class _Launch:
    """A torchrun job whose output goes to a file (a pipe nobody reads would fill up and block it)."""

    def __init__(
        self, run: Path, cache: Path, max_steps: int, *torchrun_args: str, **env: str
    ) -> None:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            *torchrun_args,
        ]
        run.mkdir(parents=True, exist_ok=True)
        self.log = run.parent / f"launch-{len(list(run.parent.glob('launch-*.txt')))}.txt"
        with open(self.log, "w") as out:
            self.proc = h.track(
                subprocess.Popen(
                    [*cmd, "-m", "ssd_train", *_args(run, cache, max_steps)],
                    env=_env(**env),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> str:
        self.proc.wait(timeout=timeout)
        return self.output()


def _train_records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if r.get("kind") == "train"]


def _wait_for_step(job: _Launch, run: Path, step: int, timeout: float = 240) -> None:
    """Until the metrics file holds a training record of ``step`` or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["step"] >= step for r in _train_records(run)):
            return
        if job.proc.poll() is not None:
            raise AssertionError(
                f"run ended early ({job.proc.returncode}):\n{job.output()[-4000:]}"
            )
        time.sleep(0.2)
    h.kill_job(job.proc.pid)
    raise AssertionError(f"step {step} never logged:\n{job.output()[-4000:]}")


def _run_stop_status(log: Path) -> str | None:
    stops = events(read_mllog(log), "run_stop")
    return stops[-1]["metadata"]["status"] if stops else None


@pytest.mark.slow
def test_crash_elastic_restart_then_sigterm_requeue_then_resume_through_torchrun(
    tmp_path, tmp_path_factory
):
    run, cache = tmp_path / "run", Path(tmp_path_factory.getbasetemp()) / "synthetic-cache"
    # segment 1, attempt 1: rank 1 dies (test-only fault: os._exit in its 4th step, once) after
    # checkpoint step-2; torchrun restarts the group, which resumes from step-2 by itself
    job = _Launch(
        run, cache, 6, "--max-restarts=1",
        SSD_RESILIENCE__FAULTS__EXIT_AT_STEP="3", SSD_RESILIENCE__FAULTS__FAULT_RANK="1",
    )  # fmt: skip
    _wait_for_step(job, run, 4)  # step 4 is only reached by the restarted attempt
    # ... which is then preempted: SIGTERM to torchrun, forwarded to the workers
    job.proc.send_signal(signal.SIGTERM)
    out = job.wait(timeout=120)
    assert "rank 1 exits in step 3" in out and (run / "fault-exit-rank1.fired").exists()
    assert "resumed from" in out
    marker = json.loads((run / "requeue").read_text())
    newest = list_checkpoints(run)[-1]
    assert (
        newest.usable
        and marker["checkpoint"] == str(newest.path)
        and marker["step"] == newest.step >= 4
    )
    # the workers returned from main (exit 0) within torchrun's grace period; torchrun itself then
    # re-raises the SIGTERM it got as SignalException (its own traceback, its own non-zero status)
    assert "run aborted (stop_requested)" in out, out[-4000:]
    assert "forcefully exiting via SIGKILL" not in out
    assert "SignalException" in out.split("Traceback")[-1], out[-4000:]
    assert _run_stop_status(run / "mlperf.resume-1.log") == "aborted"  # the restarted attempt's log

    # segment 2: the requeued job resumes from the stop checkpoint and finishes
    job = _Launch(run, cache, 6)
    out = job.wait(timeout=300)
    assert job.proc.returncode == 0, out[-4000:]
    assert not (run / "requeue").exists()  # cleared at start-up
    assert (run / "mlperf.resume-2.log").exists() and (run / "last.pt").exists()

    records = _train_records(run)
    assert {r["step"] for r in records} == set(range(1, 7))
    by_step: dict[int, set[float]] = {}
    for r in records:
        by_step.setdefault(r["step"], set()).add(r["loss"]["total"])
    assert sum(1 for r in records if r["step"] == 3) == 2  # step 3 ran before and after the crash
    assert all(len(v) == 1 for v in by_step.values()), by_step  # ... with the same loss, bitwise


@pytest.mark.slow
def test_nan_loss_stops_the_real_trainer_naming_the_step_and_no_nan_checkpoint(
    tmp_path, tmp_path_factory
):
    run, cache = tmp_path / "run", Path(tmp_path_factory.getbasetemp()) / "synthetic-cache"
    cmd = [
        sys.executable,
        "-m",
        "ssd_train",
        *_args(run, cache, max_steps=6),
        "--checkpoint.every-steps=1",
    ]
    done = h.run_job(cmd, env=_env(SSD_RESILIENCE__FAULTS__NAN_LOSS_AT_STEP="2"), timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    last = run / "checkpoints" / "step-2"
    assert f"non-finite loss at step 2 (epoch 1); last checkpoint: {last}" in output, output[-3000:]
    assert "Traceback" not in output
    infos = list_checkpoints(run)
    assert [i.step for i in infos] == [1, 2] and all(
        i.usable for i in infos
    )  # nothing after the NaN step
    assert _run_stop_status(run / "mlperf.log") == "aborted"
