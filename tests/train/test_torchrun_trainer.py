"""End to end through the real trainer under torchrun: SIGKILL, resume, SIGTERM, requeue, NaN loss."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ssd_train.checkpoint_files import list_checkpoints

_spec = importlib.util.spec_from_file_location(
    "harness", Path(__file__).with_name("test_checkpoint_harness.py")
)
h = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(h)


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


def _torchrun(run: Path, cache: Path, max_steps: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "ssd_train",
    ]
    return subprocess.Popen(
        cmd + _args(run, cache, max_steps),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _train_records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if r.get("kind") == "train"]


def _wait_for_step(
    proc: subprocess.Popen, run: Path, step: int, seen: int, timeout: float = 240
) -> None:
    """Until the metrics file holds more than ``seen`` records and one of the new ones is ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["step"] >= step for r in _train_records(run)[seen:]):
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended early ({proc.returncode}):\n{proc.stdout.read()[-4000:]}"
            )
        time.sleep(0.2)
    raise AssertionError(f"step {step} never logged")


def _run_stop_status(log: Path) -> str | None:
    for line in reversed(log.read_text().splitlines()):
        if '"key": "run_stop"' in line:
            return json.loads(line.split(":::MLLOG ", 1)[1])["metadata"]["status"]
    return None


@pytest.mark.slow
def test_sigkill_resume_sigterm_requeue_resume_through_torchrun(tmp_path, tmp_path_factory):
    run, cache = tmp_path / "run", Path(tmp_path_factory.getbasetemp()) / "synthetic-cache"
    # segment 1: SIGKILL (the whole job) after step 3; checkpoint step-2 exists
    proc = _torchrun(run, cache, max_steps=6)
    _wait_for_step(proc, run, 3, seen=0)
    h.kill_job(proc.pid)  # SIGKILL to torchrun and both workers at once
    proc.communicate(timeout=60)
    assert _run_stop_status(run / "mlperf.log") is None  # a killed segment's log just ends
    seen = len(_train_records(run))

    # segment 2: resumes from step-2 (re-runs step 3), then SIGTERM to torchrun after step 4
    proc = _torchrun(run, cache, max_steps=6)
    _wait_for_step(proc, run, 4, seen=seen)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
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
    assert out.count("Traceback") == 1 and "SignalException" in out.split("Traceback")[1], out[
        -4000:
    ]
    assert _run_stop_status(run / "mlperf.resume-1.log") == "aborted"
    assert "resumed from" in out

    # segment 3: the requeued job resumes from the stop checkpoint and finishes
    proc = _torchrun(run, cache, max_steps=6)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    assert not (run / "requeue").exists()  # cleared at start-up
    assert (run / "mlperf.resume-2.log").exists() and (run / "last.pt").exists()

    records = _train_records(run)
    assert {r["step"] for r in records} == set(range(1, 7))
    by_step: dict[int, set[float]] = {}
    for r in records:
        by_step.setdefault(r["step"], set()).add(r["loss"]["total"])
    assert sum(1 for r in records if r["step"] == 3) == 2  # step 3 ran in segments 1 and 2
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
    done = subprocess.run(
        cmd,
        env=_env(SSD_RESILIENCE__FAULTS__NAN_LOSS_AT_STEP="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "non-finite loss or gradient at optimiser step 2" in output, output[-3000:]
    infos = list_checkpoints(run)
    assert [i.step for i in infos] == [1, 2] and all(
        i.usable for i in infos
    )  # nothing after the NaN step
    assert _run_stop_status(run / "mlperf.log") == "aborted"
