"""Process-group set-up and the collectives the trainer needs (torchrun environment, one process per device).

* :func:`init_distributed` reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, picks the device
  and backend, and starts the process group with the long start-up timeout;
* :func:`broadcast_seed` draws the master seed on rank 0 and shares it;
* :func:`average_bn_statistics` all-reduces BatchNorm running statistics before evaluation (spec 8);
* :func:`wrap_model` applies DDP (default) or FSDP2 ``fully_shard``;
* :func:`broadcast_object` shares a picklable value from rank 0 (evaluation results, stop decisions).
Everything degrades to a no-op when the world size is 1 and no process group exists.
"""

from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ssd_train.config import DistributedConfig

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: global rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, plots and exported weights."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def resolve_device(preference: str, local_rank: int) -> torch.device:
    """``auto`` picks ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "device = cuda was requested but CUDA is not available on this machine"
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(cfg: DistributedConfig, device_preference: str = "auto") -> DistributedContext:
    """Start the process group when launched by torchrun (``WORLD_SIZE`` > 1); set the CUDA device."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = cfg.backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=cfg.init_timeout_s)
        store = elastic_restart_store(timeout)
        dist.init_process_group(
            backend=backend,
            timeout=timeout,
            device_id=device if device.type == "cuda" else None,
            **({"store": store, "rank": rank, "world_size": world_size} if store else {}),
        )
    return DistributedContext(rank, world_size, local_rank, device)


def elastic_restart_store(timeout: datetime.timedelta) -> dist.Store | None:
    """A store for ``init_process_group`` in a group that torchrun restarted, else None.

    torchrun's agent hosts the TCPStore and keeps it across ``--max-restarts`` restarts, and the
    default group's keys are the same in every attempt, so the restarted workers can read the
    dead attempt's gloo addresses ("Gloo connectFullMesh failed ... Connection refused"; seen with
    torch 2.15). Namespacing the keys by ``TORCHELASTIC_RESTART_COUNT`` avoids it. Use:
    ``dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=...)``.
    """
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    base = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=False,
        timeout=timeout,
    )
    return dist.PrefixStore(f"ssd-restart-{restart}", base)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(value: T, src: int = 0) -> T:
    """Rank ``src``'s ``value`` on every rank (identity without a process group)."""
    if not dist.is_initialized():
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_seed(seed: int | None) -> int:
    """The master seed: ``seed`` or a random draw on rank 0, broadcast to all ranks."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31 - 1)
    return int(broadcast_object(seed))


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and random in this process."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def average_bn_statistics(model: nn.Module) -> None:
    """All-reduce (average) BatchNorm running mean/var across ranks, in place (spec 8: before each eval)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buf in (module.running_mean, module.running_var):
                if buf is not None:
                    local = buf.to_local() if hasattr(buf, "to_local") else buf
                    dist.all_reduce(local, op=dist.ReduceOp.SUM)
                    local.div_(world)


def wrap_model(model: nn.Module, ctx: DistributedContext, cfg: DistributedConfig) -> nn.Module:
    """DDP or FSDP2 around ``model`` when distributed; ``model`` itself otherwise.

    DDP does not broadcast buffers: BatchNorm statistics stay per rank (bn_group 1) and are averaged
    by :func:`average_bn_statistics` before each evaluation, as the reference and NVIDIA did.
    """
    if not ctx.is_distributed:
        return model
    if cfg.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # FSDP2 shards only contiguous parameters: keep the weights NCHW (inputs may stay
        # channels_last; the convolutions then pick their layout per call)
        with torch.no_grad():
            for p in model.parameters():
                if not p.is_contiguous():
                    p.data = p.data.contiguous()
        for child in _fsdp_units(model):
            fully_shard(child)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model,
        device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        broadcast_buffers=False,
        bucket_cap_mb=cfg.bucket_cap_mb,
        gradient_as_bucket_view=True,
    )


def _fsdp_units(model: nn.Module) -> list[nn.Module]:
    """Children holding parameters (the items of ModuleLists): each becomes one FSDP2 unit
    (backbone trunk, each extra block, each head)."""
    units: list[nn.Module] = []
    for child in model.children():
        if not any(p.requires_grad for p in child.parameters()):
            continue
        if isinstance(child, nn.ModuleList | nn.ModuleDict):
            units += _fsdp_units(child)
        else:
            units.append(child)
    return units


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (FSDP2 modifies the module in place) or a compiled wrapper."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)
