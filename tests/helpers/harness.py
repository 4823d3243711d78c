"""A tiny training loop wired like the trainer, run as a script by the resilience tests.

Run as a script by the resilience tests (``tests/helpers/jobs.py`` builds the command lines):
``python tests/helpers/harness.py RUN_DIR ...`` or under ``torchrun``. It trains a small conv net with BatchNorm and dropout (so per-rank RNG
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
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ssd_train.checkpoint.manager import (
    CheckpointConfig,
    CheckpointManager,
    apply_training_state,
    training_state,
)
from ssd_train.distributed import (
    average_bn_statistics,
    elastic_restart_store,
    set_collective_timeout,
)
from ssd_train.resilience.preemption import StopRequest
from ssd_train.resilience.watchdog import StepWatchdog
from ssd_train.settings import load_settings
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
    res = load_settings([]).resilience  # SSD_RESILIENCE__* from the environment (harness_env)
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

    def state() -> dict[str, Any]:
        """As ``Trainer.save_checkpoint``: BN statistics averaged over ranks first (DCP keeps one
        copy of a replicated buffer), then the state in the manager's layout."""
        average_bn_statistics(ddp)
        return training_state(ddp, opt, sched=sched.state_dict(), data=loader.state_dict())

    resume_from = manager.resume_path()
    if resume_from is not None:
        restored = manager.load(resume_from, state())
        apply_training_state(ddp, opt, restored.state)
        step = restored.step
        sched.load_state_dict(restored.state["sched"])
        loader.load_state_dict(restored.state["data"])
        (run_dir / f"resumed-rank{rank}.json").write_text(
            json.dumps({"step": step, "loader": restored.state["data"]})
        )
    losses = open(run_dir / f"losses-rank{rank}.jsonl", "a")  # noqa: SIM115 - closed in finally
    first_bad = -1
    code = 0
    try:
        while step < a.steps:
            x, y = loader.next()
            with watchdog.step(step) if watchdog else contextlib.nullcontext():
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
                path = manager.save(step, state(), block=True)
                stop.acknowledge(step, path)
                return 0
            if manager.due(step):
                if first_bad >= 0:
                    print(
                        f"non-finite loss at step {first_bad}; last checkpoint: {manager.last_saved}",
                        file=sys.stderr,
                    )
                    code = 3
                    return code
                manager.save(step, state())
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


if __name__ == "__main__":
    exit_code = main()
    print(f"harness rank {os.environ.get('RANK', '0')} exit {exit_code}", flush=True)
    sys.exit(exit_code)
