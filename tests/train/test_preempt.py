"""Stop requests: SIGUSR1 to one worker under torchrun, the stop file, a second signal.

SIGTERM through torchrun is tested with the real trainer in test_torchrun_trainer.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ssd_train.checkpoint.files import inspect_checkpoint, list_checkpoints

from tests.helpers import jobs as h


def _start(run: Path, *args: str, nproc: int) -> subprocess.Popen:
    return h.track(
        subprocess.Popen(
            h.harness_command(run, *args, nproc=nproc),
            env=h.harness_env(preemption__check_every_steps=2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    )


def _wait_for(proc: subprocess.Popen, text: str) -> list[str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        # two ranks share the pipe, so their lines can run together: "rank 1 step 3rank 0 step 3"
        if re.search(re.escape(text) + r"(?!\d)", line):
            return seen
    raise AssertionError(f"never saw {text!r}:\n{''.join(seen)[-3000:]}")


def _finish(proc: subprocess.Popen, seen: list[str], timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return "".join(seen) + out


def _assert_stopped_cleanly(run: Path, output: str, ranks: int) -> int:
    """The newest checkpoint is complete and named by the requeue marker; every worker returned 0."""
    marker = json.loads((run / "requeue").read_text())
    newest = list_checkpoints(run)[-1]
    assert newest.usable, newest.problem
    assert marker["checkpoint"] == str(newest.path) and marker["step"] == newest.step
    assert marker["step"] % 2 == 0  # ranks agree on check steps only (every 2 here)
    for rank in range(ranks):
        assert f"harness rank {rank} exit 0" in output, output[-3000:]
    assert not (run / "final.pt").exists()
    return marker["step"]


@pytest.mark.slow
def test_sigusr1_to_one_worker_stops_every_rank(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, "--steps", "200", "--every", "1000", "--step-sleep", "0.3", nproc=2)
    seen = _wait_for(proc, "rank 1 step 3")
    os.kill(int((run / "pid-rank1").read_text()), signal.SIGUSR1)  # torchrun does not forward USR1
    output = _finish(proc, seen)
    _assert_stopped_cleanly(run, output, ranks=2)
    assert "rank 1: SIGUSR1 received" in output


@pytest.mark.slow
def test_stop_file_stops_a_bare_process_and_is_consumed(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, "--steps", "200", "--every", "1000", "--step-sleep", "0.2", nproc=0)
    seen = _wait_for(proc, "rank 0 step 2")
    (run / "STOP").touch()
    output = _finish(proc, seen)
    assert proc.returncode == 0
    step = _assert_stopped_cleanly(run, output, ranks=1)
    assert step >= 2 and not (run / "STOP").exists()
    assert inspect_checkpoint(run / "checkpoints" / f"step-{step}").usable


@pytest.mark.slow
def test_a_second_signal_exits_at_once(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, "--steps", "200", "--every", "1000", "--step-sleep", "20", nproc=0)
    seen = _wait_for(proc, "rank 0 ready")  # handlers installed
    time.sleep(1.0)  # now inside step 0's 20 s of "work"
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output = _finish(proc, seen, timeout=10)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == -signal.SIGTERM, output
    assert "SIGTERM received" in output
    assert not (run / "requeue").exists()
