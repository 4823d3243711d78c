"""Ctrl-C (SIGINT) to a real ``python -m ssd_train``: checkpoint, exit 130, resume; a second Ctrl-C.

The trainer is started with SIGINT's default disposition, as from an interactive shell (a child
inherits an ignored SIGINT, e.g. when pytest runs as a background job of a script). The
single-process runs train the tiny stand-in network (``tests/helpers/cli_standin.py``) in a
process forked from one that has imported torch already (``tests/helpers/prelaunch.py``); the
torchrun run launches SSD300 for real.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ssd_train.checkpoint.files import list_checkpoints

from tests.helpers import jobs as h
from tests.helpers import prelaunch


def _args(run: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"--run-dir={run}", "--seed=3", f"--synthetic.cache-dir={cache}", "--synthetic.train-images=8",
        "--synthetic.val-images=2", "--data.batch-size=2", "--data.eval-batch-size=2", "--data.num-workers=0",
        "--model.backbone-weights=none", "--logging.log-every=1", "--num-threads=1", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSD_")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"})
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(
    run: Path, cache: Path, *extra: str, launcher: tuple[str, ...] = ()
) -> tuple[subprocess.Popen | prelaunch.PrelaunchedProcess, Path]:
    """``launcher``: e.g. torchrun, launched for real; none: the stand-in run, prelaunched."""
    run.parent.mkdir(parents=True, exist_ok=True)
    log = run.parent / f"{run.name}-{len(list(run.parent.glob(f'{run.name}-*.txt')))}.txt"
    if not launcher:
        args = _args(run, cache, *extra)
        module = "tests.helpers.cli_standin"
        return h.track(prelaunch.launch(module, args, env=_env(), cwd=Path.cwd(), stdout=log)), log
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, *launcher, "-m", "ssd_train", *_args(run, cache, *extra)],
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,  # SIGINT as an interactive shell leaves it
        )
    return h.track(proc), log


def _wait_for_step(
    proc: subprocess.Popen | prelaunch.PrelaunchedProcess, log: Path, run: Path, step: int
) -> None:
    deadline = time.monotonic() + 240
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists():
            records = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            if any(r.get("kind") == "train" and r["step"] >= step for r in records):
                return
        assert proc.poll() is None, f"ended early ({proc.returncode}):\n{log.read_text()[-4000:]}"
        time.sleep(0.1)
    raise AssertionError(f"step {step} never logged:\n{log.read_text()[-4000:]}")


def test_ctrl_c_writes_a_checkpoint_exits_130_and_the_rerun_resumes(
    tmp_path, tmp_path_factory, prelaunched
):
    run, cache = tmp_path / "run", Path(tmp_path_factory.getbasetemp()) / "synthetic-cache"
    stop_args = ("--schedule.max-steps=100", "--checkpoint.every-steps=0")
    proc, log = _start(run, cache, *stop_args, "--resilience.preemption.check-every-steps=1")
    _wait_for_step(proc, log, run, 2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()[-4000:]
    out = log.read_text()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]
    assert "Ctrl-C: finishing the step, then writing a checkpoint" in out
    newest = list_checkpoints(run)[-1]
    assert newest.usable and newest.step >= 2, newest
    lines = out.strip().splitlines()
    ending = next(i for i, line in enumerate(lines) if line.startswith("run aborted (ctrl_c)"))
    assert "stopped by Ctrl-C" in lines[ending]
    assert lines[ending + 1] == "continue this run from its latest checkpoint with:"
    assert f"--run-dir {run}" in lines[ending + 2]
    assert not (run / "requeue").exists()  # the user stopped it: nothing for a launcher to requeue

    # the continue command (same settings, a nearer max-steps) resumes from that checkpoint
    proc, log = _start(run, cache, f"--schedule.max-steps={newest.step + 1}")
    assert proc.wait(timeout=180) == 0, log.read_text()[-4000:]
    out = log.read_text()
    assert f"resumed from {newest.path} (step {newest.step}," in out, out[-4000:]


def test_second_ctrl_c_exits_at_once_leaving_the_complete_checkpoint(
    tmp_path, tmp_path_factory, prelaunched
):
    run, cache = tmp_path / "run", Path(tmp_path_factory.getbasetemp()) / "synthetic-cache"
    # the first Ctrl-C is acted on only every 1000 steps: the second one must not wait for it
    proc, log = _start(
        run, cache, "--schedule.max-steps=100000", "--checkpoint.every-steps=2",
        "--checkpoint.asynchronous=false", "--resilience.preemption.check-every-steps=1000",
    )  # fmt: skip
    _wait_for_step(proc, log, run, 3)
    before = {c.path: c.marker for c in list_checkpoints(run) if c.usable}
    assert before, log.read_text()[-4000:]
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None  # the first one only asks for a stop
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    assert proc.wait(timeout=30) == 130, log.read_text()[-4000:]
    assert time.monotonic() - start < 10
    out = log.read_text()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("ssd-train: second Ctrl-C: exiting now without a checkpoint"), last
    after = {c.path: c.marker for c in list_checkpoints(run) if c.usable}
    for path, marker in before.items():  # kept (or pruned by a newer complete one), never torn
        assert path not in after or after[path] == marker
    newest_before = max(m["step"] for m in before.values())
    assert max(m["step"] for m in after.values()) >= newest_before


@pytest.mark.slow
def test_ctrl_c_through_torchrun_stops_every_rank_with_a_checkpoint(tmp_path, tmp_path_factory):
    run, cache = tmp_path / "run", Path(tmp_path_factory.getbasetemp()) / "synthetic-cache"
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    proc, log = _start(
        run, cache, "--schedule.max-steps=100", "--checkpoint.every-steps=0",
        "--resilience.preemption.check-every-steps=1", launcher=torchrun,
    )  # fmt: skip
    _wait_for_step(proc, log, run, 2)
    proc.send_signal(signal.SIGINT)  # torchrun forwards it to both workers
    proc.wait(timeout=120)
    out = log.read_text()
    assert "closing signal SIGINT" in out  # torchrun's own line: it forwarded the signal
    for rank in (0, 1):  # a rank whose handler had not run yet learns it from the agreement
        assert re.search(rf"rank {rank}: stopping \((SIGINT|Ctrl-C on another rank)\)", out), out
    assert "run aborted (ctrl_c)" in out and "continue this run from its latest checkpoint" in out
    assert "forcefully exiting via SIGKILL" not in out
    # the only traceback is torchrun's own SignalException (it re-raises the signal it got)
    assert out.count("Traceback") == 1 and "SignalException" in out.split("Traceback")[-1]
    newest = list_checkpoints(run)[-1]
    assert newest.usable and newest.marker["world_size"] == 2 and newest.step >= 2
    assert not (run / "requeue").exists()


def test_ctrl_c_before_training_starts_is_one_line_and_130(tmp_path, monkeypatch, capsys):
    import ssd_train.__main__ as cli

    def interrupted(settings: object) -> int:  # e.g. while the dataset is being generated
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(_args(tmp_path / "run", tmp_path / "cache")) == 130
    err = capsys.readouterr().err
    assert err == "ssd-train: interrupted (Ctrl-C); no checkpoint was written for it\n"
