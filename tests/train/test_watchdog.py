"""Stuck-step watchdog (stack dump naming the rank and step) and the collective-timeout switch."""

from __future__ import annotations

import threading
import time

import pytest
from ssd_train.resilience.config import WatchdogConfig
from ssd_train.resilience.watchdog import StepWatchdog

from tests.helpers import jobs as h


def _stuck_in_a_very_recognisable_place(seconds: float) -> None:
    time.sleep(seconds)


def test_reports_a_step_far_slower_than_the_median_with_all_stacks(tmp_path):
    cfg = WatchdogConfig(factor=5, floor_s=0.3, warmup_steps=3, poll_s=0.05)
    wd = StepWatchdog(tmp_path, rank=3, cfg=cfg).start()
    try:
        for step in range(4):  # ~10 ms steps: threshold = max(0.3, 5 x 0.01) = 0.3 s
            with wd.step(step):
                time.sleep(0.01)
        assert wd.threshold() == pytest.approx(0.3)
        with wd.step(4):
            _stuck_in_a_very_recognisable_place(1.0)
        with wd.step(5):  # a normal step is not reported
            time.sleep(0.01)
    finally:
        wd.close()
    report = (tmp_path / "watchdog-rank3.txt").read_text()
    assert wd.reports == 1
    assert "rank 3 is stuck: step 4 has run" in report
    assert "_stuck_in_a_very_recognisable_place" in report and "time.sleep(seconds)" in report
    assert 'Thread "MainThread"' in report


def test_does_not_report_while_warming_up_or_paused(tmp_path):
    cfg = WatchdogConfig(factor=2, floor_s=0.1, warmup_steps=3, poll_s=0.02)
    wd = StepWatchdog(tmp_path, rank=0, cfg=cfg)
    with wd.step(0):  # a slow first step (compilation) while there is no median yet
        time.sleep(0.3)
        assert wd.poll() is False
    for step in range(1, 4):
        with wd.step(step):
            time.sleep(0.01)
    with wd.paused():  # evaluation: legitimately long
        time.sleep(0.3)
        assert wd.poll() is False
    done = threading.Event()
    with wd.step(4):
        time.sleep(0.4)
        assert wd.poll() is True and wd.poll() is False  # once per stuck step
        done.set()
    assert wd.reports == 1


@pytest.mark.slow
def test_sleeping_rank_is_reported_and_the_short_collective_timeout_fires(tmp_path):
    run = tmp_path / "run"
    env = h.harness_env(
        faults__sleep_at_step=5,
        faults__fault_rank=1,
        faults__sleep_s=12,
        watchdog__floor_s=1.0,
        watchdog__factor=3,
        watchdog__warmup_steps=3,
        watchdog__poll_s=0.2,
    )
    cmd = h.harness_command(run, "--steps", "8", "--every", "1000", "--collective-timeout", "4")
    t0 = time.monotonic()
    done = h.run_job(cmd, env=env, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode != 0  # the collective timed out
    report = (run / "watchdog-rank1.txt").read_text()
    assert "rank 1 is stuck: step 5" in report
    assert "fault_injection.py" in report and "time.sleep(self.cfg.sleep_s)" in report
    waiting = (run / "watchdog-rank0.txt").read_text()  # rank 0 waits in the gradient all-reduce
    assert "rank 0 is stuck: step 5" in waiting and "loss.backward()" in waiting
    assert "timed out" in output.lower() or "timeout" in output.lower(), output[-3000:]
    assert time.monotonic() - t0 < 170
