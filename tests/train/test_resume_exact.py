"""Exact resume: a 2-rank run SIGKILLed at a random step and resumed equals the uninterrupted run."""

from __future__ import annotations

import json
import random
import re
import subprocess
import time

import pytest

from tests.helpers import jobs as h

ARGS = ("--steps", "12", "--every", "3", "--asynchronous")


@pytest.mark.slow
def test_sigkill_at_random_step_then_resume_is_bitwise_identical(tmp_path, tmp_path_factory):
    ref = h.reference_run(tmp_path_factory)
    seed = time.time_ns() % 10_000
    kill_after = random.Random(seed).randint(4, 8)
    print(f"kill seed {seed}: SIGKILL after step {kill_after}")
    run = tmp_path / "run"
    proc = h.track(
        subprocess.Popen(
            # 1 s per step: the kill lands >= 4 s before the end even when torchrun relays lines late
            h.harness_command(run, *ARGS, "--step-sleep", "1.0"),
            env=h.harness_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    )
    for line in proc.stdout:
        # two ranks share the pipe, so their lines can run together: "rank 1 step 5rank 0 step 5"
        if re.search(rf"rank 0 step {kill_after}(?!\d)", line):
            h.kill_job(proc.pid)  # SIGKILL to torchrun and both workers at once
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert not (run / "final.pt").exists()
    done = h.run_job(h.harness_command(run, *ARGS), env=h.harness_env(), timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    h.assert_same_run(run, ref)
    for rank in (0, 1):  # each rank got its own data position back
        resumed = json.loads((run / f"resumed-rank{rank}.json").read_text())
        assert resumed["loader"]["rank"] == rank
        assert resumed["step"] % 3 == 0 and resumed["step"] <= kill_after
