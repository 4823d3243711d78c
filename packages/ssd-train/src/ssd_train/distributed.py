"""Process-group set-up and the collectives the trainer needs (torchrun environment, one process per device).

* :func:`init_distributed` reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, picks the device
  and backend, and starts the process group with the long start-up timeout;
* :func:`broadcast_seed` draws the master seed on rank 0 and shares it;
* :func:`average_bn_statistics` all-reduces BatchNorm running statistics before evaluation (spec 8);
* :func:`wrap_model` applies DDP (default) or FSDP2 ``fully_shard``;
* :func:`broadcast_object` shares a picklable value from rank 0 (evaluation results, stop decisions);
* :func:`set_collective_timeout` switches between the start-up and the training timeout.
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

from ssd_train.trainer_config import DistributedConfig

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


def launched_world_size() -> int:
    """Processes torchrun launched (its ``WORLD_SIZE``); 1 without torchrun. Known before the
    process group starts; :class:`DistributedContext` carries it afterwards."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_distributed(cfg: DistributedConfig, device_preference: str = "auto") -> DistributedContext:
    """Start the process group when launched by torchrun (``WORLD_SIZE`` > 1); set the CUDA device
    (and ``torch.backends.cudnn.benchmark``)."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = launched_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # fixed input shapes (300x300, fixed batch): let cuDNN pick the fastest convolution
        # algorithms once per shape
        torch.backends.cudnn.benchmark = True
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
        launched_world_size(),
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


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), the tensor itself otherwise."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


@torch.no_grad()
def average_bn_statistics(model: nn.Module, group: dist.ProcessGroup | None = None) -> int:
    """Make BatchNorm running statistics identical on every rank: their mean over ranks (spec 8).

    Each rank's BN layers see only its own batches (bn_group 1), so running_mean / running_var
    drift apart; they are averaged before each evaluation and before each checkpoint, as the
    reference and NVIDIA did. One all-reduce of all buffers flattened; ``num_batches_tracked`` is
    equal on every rank and left alone. A no-op without a multi-rank process group. Returns the
    number of buffers averaged. Collective: every rank calls it.
    """
    buffers = [
        _local(b)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        for b in (m.running_mean, m.running_var)
        if b is not None and b.is_floating_point()
    ]
    if not buffers or not (dist.is_initialized() and dist.get_world_size(group) > 1):
        return len(buffers)
    flat = torch.cat([b.detach().reshape(-1).float() for b in buffers])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    for b in buffers:
        n = b.numel()
        b.copy_(flat[offset : offset + n].view_as(b).to(b.dtype))
        offset += n
    return len(buffers)


def set_collective_timeout(seconds: float, group: dist.ProcessGroup | None = None) -> bool:
    """Set the timeout of ``group`` (default group) for all later collectives. False if impossible.

    The trainer starts with ``distributed.init_timeout_s`` (compilation can take long) and switches
    to ``distributed.timeout_s`` at run_start, so a stuck rank fails the job quickly.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return False
    timeout = datetime.timedelta(seconds=seconds)
    setter = getattr(dist, "set_timeout", None)
    if setter is None:
        from torch.distributed import distributed_c10d

        setter = getattr(distributed_c10d, "_set_pg_timeout", None)
    if setter is None:
        return False
    setter(timeout, group)
    return True


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
    """Children holding parameters, each one FSDP2 unit; plain containers (a ModuleList or
    ModuleDict without its own ``forward``) are split into their items. For SSD300: the trunk, the
    extra blocks and the loc and conf heads (four units, each one compiled graph in the step)."""
    units: list[nn.Module] = []
    for child in model.children():
        if not any(p.requires_grad for p in child.parameters()):
            continue
        container = isinstance(child, nn.ModuleList | nn.ModuleDict)
        if container and type(child).forward is nn.Module.forward:
            units += _fsdp_units(child)
        else:
            units.append(child)
    return units
