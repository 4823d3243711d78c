"""A tiny training loop wired like the trainer, run as a script by the resilience tests.

Not a test module (it has no tests): ``python tests/train/test_checkpoint_harness.py RUN_DIR ...``
or under ``torchrun``. It trains a small conv net with BatchNorm and dropout (so per-rank RNG
matters) on fixed random data through DDP/gloo, using the real ``CheckpointManager``,
``StopRequest``, ``StepWatchdog`` and ``FaultInjector``. Each rank appends
``{"step": n, "loss": float.hex}`` lines to ``losses-rank<k>.jsonl`` and, at the end, rank 0 writes
``final.pt`` (model state dict). Exit codes: 0 done or stopped on request, 3 non-finite loss.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ssd_train.checkpoint.manager import CheckpointConfig, CheckpointManager
from ssd_train.resilience.attach import elastic_restart_store, resilience_settings
from ssd_train.resilience.preemption import StopRequest
from ssd_train.resilience.watchdog import StepWatchdog, set_collective_timeout
from torch import nn

NUM_SAMPLES = 64


class ToyLoader:
    """Per-rank shard of a per-epoch permutation; ``state_dict`` = (epoch, position, rank)."""

    def __init__(self, rank: int, world: int, batch: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(NUM_SAMPLES, 3, 8, 8, generator=g)
        self.y = torch.randn(NUM_SAMPLES, 2, generator=g)
        self.rank, self.world, self.batch, self.seed = rank, world, batch, seed
        self.epoch, self.pos = 0, 0

    def __len__(self) -> int:
        return NUM_SAMPLES // (self.world * self.batch)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos == len(self):
            self.epoch, self.pos = self.epoch + 1, 0
        perm = torch.randperm(
            NUM_SAMPLES, generator=torch.Generator().manual_seed(self.seed + self.epoch)
        )
        idx = perm[self.rank :: self.world][self.pos * self.batch : (self.pos + 1) * self.batch]
        self.pos += 1
        return self.x[idx], self.y[idx]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "rank": self.rank}

    def load_state_dict(self, sd: dict[str, int]) -> None:
        if sd["rank"] != self.rank:
            raise RuntimeError(f"rank {self.rank} got the loader state of rank {sd['rank']}")
        self.epoch, self.pos = sd["epoch"], sd["pos"]


def build_model() -> nn.Module:
    torch.manual_seed(1234)  # same initial weights on every rank and every launch
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--asynchronous", action="store_true")
    p.add_argument("--resume", default="auto")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--step-sleep", type=float, default=0.0, help="seconds of extra work per step")
    p.add_argument("--collective-timeout", type=float, default=None)
    a = p.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        store = elastic_restart_store(datetime.timedelta(seconds=60))
        if store is None:
            dist.init_process_group("gloo")
        else:
            rank_env = int(os.environ["RANK"])
            dist.init_process_group("gloo", store=store, rank=rank_env, world_size=world)
    rank = dist.get_rank() if world > 1 else 0
    if a.collective_timeout is not None:
        set_collective_timeout(a.collective_timeout)
    res = resilience_settings(None)
    run_dir = a.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"pid-rank{rank}").write_text(str(os.getpid()))

    model = build_model()
    ddp = (
        nn.parallel.DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model
    )
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    torch.manual_seed(100 + rank)  # per-rank dropout stream
    loader = ToyLoader(rank, world, a.batch, seed=7)

    cfg = CheckpointConfig(
        every_steps=a.every, keep=a.keep, asynchronous=a.asynchronous, resume=a.resume
    )
    manager = CheckpointManager(cfg, run_dir, fingerprint={"global_batch_size": a.batch * world})
    stop = StopRequest(run_dir, res.preemption).install()
    print(f"rank {rank} ready", flush=True)
    watchdog = StepWatchdog(run_dir, rank, res.watchdog).start() if res.watchdog.enabled else None
    from ssd_train.resilience.fault_injection import FaultInjector

    step = 0
    injector = FaultInjector(res.faults, run_dir, rank, lambda: step).install(model)

    restored = manager.resume(ddp, opt)
    if restored is not None:
        step = restored.step
        sched.load_state_dict(restored.shared["sched"])
        loader.load_state_dict(restored.per_rank["loader"])
        (run_dir / f"resumed-rank{rank}.json").write_text(
            json.dumps({"step": step, "loader": restored.per_rank["loader"]})
        )
    losses = open(run_dir / f"losses-rank{rank}.jsonl", "a")  # noqa: SIM115 - closed in finally
    first_bad = -1
    code = 0
    try:
        while step < a.steps:
            x, y = loader.next()
            with watchdog.step(step) if watchdog else _null():
                loss = (ddp(x) - y).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if a.step_sleep:
                    time.sleep(a.step_sleep)
            if first_bad < 0 and not torch.isfinite(loss):  # host sync: fine for a toy loop
                first_bad = step
            losses.write(json.dumps({"step": step, "loss": float(loss).hex()}) + "\n")
            losses.flush()
            step += 1
            print(f"rank {rank} step {step}", flush=True)
            if stop.should_stop(step):
                path = manager.save(
                    step,
                    ddp,
                    opt,
                    shared={"sched": sched.state_dict()},
                    per_rank={"loader": loader.state_dict()},
                    block=True,
                )
                stop.acknowledge(step, path)
                return 0
            if manager.should_save(step):
                if first_bad >= 0:
                    print(
                        f"non-finite loss at step {first_bad}; last checkpoint: {manager.last_saved}",
                        file=sys.stderr,
                    )
                    code = 3
                    return code
                manager.save(
                    step,
                    ddp,
                    opt,
                    shared={"sched": sched.state_dict()},
                    per_rank={"loader": loader.state_dict()},
                )
        manager.close()
        if rank == 0:
            torch.save(model.state_dict(), run_dir / "final.pt")
        return 0
    finally:
        losses.close()
        injector.close()
        if watchdog:
            watchdog.close()
        stop.close()
        if world > 1 and dist.is_initialized() and code == 0:
            dist.barrier()
            dist.destroy_process_group()


# ---------------------------------------------------------------- helpers for the tests
HARNESS = Path(__file__).resolve()


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


LAUNCHED: list[subprocess.Popen] = []


def track(proc: subprocess.Popen) -> subprocess.Popen:
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
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """``subprocess.run(capture_output=True, text=True)`` that kills the whole job on a timeout."""
    proc = track(
        subprocess.Popen(
            cmd,
            env=env,
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


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


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


if __name__ == "__main__":
    exit_code = main()
    print(f"harness rank {os.environ.get('RANK', '0')} exit {exit_code}", flush=True)
    sys.exit(exit_code)
