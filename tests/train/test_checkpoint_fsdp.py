"""FSDP2 (DTensor shards) and DDP: save, train on, load, re-train gives bitwise the same losses.

The test launches this file under torchrun (2 ranks, gloo); the worker part is ``_worker``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _worker(run_dir: Path, strategy: str) -> None:
    import json

    import torch
    import torch.distributed as dist
    from ssd_train.checkpoint.manager import (
        CheckpointConfig,
        CheckpointManager,
        apply_training_state,
        training_state,
    )
    from torch import nn

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2)
    )  # fmt: skip
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model[0])
        fully_shard(model[4])
        wrapped = fully_shard(model)
    else:
        wrapped = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    torch.manual_seed(10 + rank)  # per-rank dropout stream
    data = torch.randn(40, 6, generator=torch.Generator().manual_seed(rank))

    def step(i: int) -> str:
        loss = wrapped(data[i * 4 : (i + 1) * 4]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss).hex()

    mgr = CheckpointManager(CheckpointConfig(asynchronous=True), run_dir, fingerprint={"gb": 8})
    first = [step(i) for i in range(3)]
    mgr.save(3, training_state(wrapped, opt, note="x", data={"pos": 3, "rank": rank}))
    after = [step(i) for i in range(3, 6)]  # training goes on while the save is written
    mgr.wait()
    restored = mgr.load(run_dir / "checkpoints" / "step-3", training_state(wrapped, opt))
    apply_training_state(wrapped, opt, restored.state)
    replay = [step(i) for i in range(3, 6)]
    out = {"first": first, "after": after, "replay": replay, "per_rank": restored.state["data"]}
    (run_dir / f"result-{strategy}-rank{rank}.json").write_text(json.dumps(out))
    mgr.close()
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_save_train_load_replays_bitwise(tmp_path, strategy):
    import json

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*cmd, __file__, str(tmp_path), strategy], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / f"result-{strategy}-rank{rank}.json").read_text())
        assert result["replay"] == result["after"]
        assert result["per_rank"] == {"pos": 3, "rank": rank}
    r0 = json.loads((tmp_path / f"result-{strategy}-rank0.json").read_text())
    r1 = json.loads((tmp_path / f"result-{strategy}-rank1.json").read_text())
    assert (
        r0["after"] != r1["after"]
    )  # ranks see different data and dropout: per-rank state matters


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2])
