"""Elastic restart: under torchrun --max-restarts, a crashed worker's group restarts and resumes."""

from __future__ import annotations

import pytest

from tests.helpers import jobs as h


@pytest.mark.slow
def test_worker_crash_restarts_the_group_which_resumes_and_finishes_exactly(
    tmp_path, tmp_path_factory
):
    ref = h.reference_run(tmp_path_factory)
    run = tmp_path / "run"
    cmd = h.harness_command(
        run, "--steps", "12", "--every", "3", "--asynchronous", torchrun_args=("--max-restarts=1",)
    )
    # test-only fault: rank 1 calls os._exit(13) in step 7, once (marker file), after checkpoint step-6
    env = h.harness_env(faults__exit_at_step=7, faults__fault_rank=1)
    done = h.run_job(cmd, env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "rank 1 exits in step 7" in output
    assert (run / "fault-exit-rank1.fired").exists()
    assert (run / "resumed-rank1.json").exists()  # the second attempt resumed
    h.assert_same_run(run, ref)
