"""Launching and checking jobs: the resilience harness (``harness.py``) or the real trainer
under torchrun, killing whole process trees, and comparing a resumed run with the reference."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

HARNESS = Path(__file__).resolve().with_name("harness.py")


def harness_command(
    run_dir: Path, *args: str, nproc: int = 2, torchrun_args: tuple[str, ...] = ()
) -> list[str]:
    """The command line that runs this harness under torchrun (``nproc`` > 0) or bare (0)."""
    if nproc == 0:
        return [sys.executable, str(HARNESS), str(run_dir), *args]
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        *torchrun_args, str(HARNESS), str(run_dir), *args,
    ]  # fmt: skip


def harness_env(**faults: object) -> dict[str, str]:
    """Environment for a harness run; ``faults`` become SSD_RESILIENCE__... variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSD_RESILIENCE__")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    for key, value in faults.items():
        env["SSD_RESILIENCE__" + key.upper()] = str(value)
    return env


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc; torchrun starts workers in new sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def kill_job(pid: int) -> None:
    """SIGKILL a launcher and every process below it at once, as when a node dies."""
    for p in process_tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


class Job(Protocol):
    """What a tracked job offers: ``subprocess.Popen`` or ``prelaunch.PrelaunchedProcess``."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


J = TypeVar("J", bound=Job)
LAUNCHED: list[Job] = []


def track(proc: J) -> J:
    """Remember a launched job so that :func:`kill_leftovers` can end it if a test fails."""
    LAUNCHED.append(proc)
    return proc


def kill_leftovers() -> None:
    """SIGKILL every tracked job that is still running (workers live in their own sessions)."""
    for proc in LAUNCHED:
        if proc.poll() is None:
            kill_job(proc.pid)
            proc.wait()
    LAUNCHED.clear()


def run_job(
    cmd: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 240,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """``subprocess.run(capture_output=True, text=True)`` that kills the whole job on a timeout."""
    proc = track(
        subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(
            f"timed out after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def read_losses(run_dir: Path, rank: int) -> list[tuple[int, str]]:
    """Every (step, loss as float.hex) line a rank wrote, in order (re-run steps appear twice)."""
    lines = (run_dir / f"losses-rank{rank}.jsonl").read_text().splitlines()
    return [(d["step"], d["loss"]) for d in map(json.loads, lines)]


def assert_same_run(
    run: Path, ref: Path, steps: int = 12, *, exact_bn_buffers: bool = True
) -> None:
    """Final weights bitwise equal; every loss a rank logged (re-run steps too) equals the reference's.

    ``exact_bn_buffers=False``: BN running statistics only to 1e-6 (an extra checkpoint averages
    them across ranks once more; averaging commutes with their moving average up to rounding).
    """
    final = torch.load(run / "final.pt", weights_only=True)
    expected = torch.load(ref / "final.pt", weights_only=True)
    assert final.keys() == expected.keys()
    for key in expected:
        if exact_bn_buffers or not key.endswith(("running_mean", "running_var")):
            assert torch.equal(final[key], expected[key]), key
        else:
            torch.testing.assert_close(final[key], expected[key], rtol=1e-6, atol=1e-7)
    for rank in (0, 1):
        ref_losses = dict(read_losses(ref, rank))
        assert sorted(ref_losses) == list(range(steps))
        got = read_losses(run, rank)
        assert {s for s, _ in got} == set(range(steps))
        for step, loss in got:
            assert loss == ref_losses[step], (
                f"rank {rank} step {step}: {loss} != {ref_losses[step]}"
            )


def reference_run(tmp_path_factory: Any) -> Path:
    """The uninterrupted 2-rank run (12 steps, async checkpoints every 3), once per session."""
    run = Path(tmp_path_factory.getbasetemp()) / "resilience-reference"
    if not (run / "final.pt").exists():
        cmd = harness_command(run, "--steps", "12", "--every", "3", "--asynchronous")
        done = run_job(cmd, env=harness_env(), timeout=240)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run
