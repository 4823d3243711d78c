"""Padded tensor all-gather across ranks (gloo on CPU, nccl on CUDA) and small broadcasts.

Ranks hold different numbers of rows; each pads its rows to the largest count, one all_gather
moves them, and the receivers trim the padding. No pickled Python objects travel.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

ProcessGroup = dist.ProcessGroup


def is_distributed() -> bool:
    """True when torch.distributed is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world(group: ProcessGroup | None = None) -> tuple[int, int]:
    """(rank within group, group size); (0, 1) without torch.distributed."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def global_rank_of_group_rank_zero(group: ProcessGroup | None = None) -> int:
    """Global rank of the group's rank 0 (the `src` for broadcasts)."""
    if group is None:
        return 0
    return dist.get_global_rank(group, 0)


def collective_device(group: ProcessGroup | None = None) -> torch.device:
    """Device for collective tensors: the current CUDA device with nccl, else CPU (gloo)."""
    backend = str(dist.get_backend(group)) if is_distributed() else "gloo"
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def padded_all_gather(
    tensor: torch.Tensor, group: ProcessGroup | None = None
) -> list[torch.Tensor]:
    """All-gather tensors whose first dimension differs between ranks.

    Args:
        tensor: [n_rank, *rest]; same dtype and trailing shape on every rank.
    Returns:
        One tensor per rank, [n_r, *rest], in rank order, on the collective device.
        Without torch.distributed: [tensor].
    """
    if not is_distributed():
        return [tensor]
    device = collective_device(group)
    _, world = rank_and_world(group)
    local = tensor.to(device)
    count = torch.tensor([local.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    received = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(received, padded, group=group)
    return [part[:size] for part, size in zip(received, sizes, strict=True)]


def any_rank(flag: bool, group: ProcessGroup | None = None) -> list[int]:
    """Ranks (within group) whose `flag` is True; every rank gets the same list. Collective."""
    if not is_distributed():
        return [0] if flag else []
    device = collective_device(group)
    _, world = rank_and_world(group)
    local = torch.tensor([int(flag)], dtype=torch.int64, device=device)
    flags = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(flags, local, group=group)
    return [r for r, f in enumerate(flags) if int(f.item())]


def broadcast_float64(
    values: torch.Tensor | None, group: ProcessGroup | None = None
) -> torch.Tensor:
    """Broadcast a 1-D float64 tensor of any length from the group's rank 0 to every rank.

    values: float64 [L] on rank 0 (ignored elsewhere). Returns float64 [L] on CPU on every rank.
    """
    if not is_distributed():
        assert values is not None
        return values.detach().to("cpu", torch.float64)
    device = collective_device(group)
    rank, _ = rank_and_world(group)
    src = global_rank_of_group_rank_zero(group)
    length = torch.zeros(1, dtype=torch.int64, device=device)
    if rank == 0:
        assert values is not None
        length[0] = values.numel()
    dist.broadcast(length, src=src, group=group)
    payload = torch.zeros(int(length.item()), dtype=torch.float64, device=device)
    if rank == 0:
        payload.copy_(values.reshape(-1).to(device, torch.float64))
    dist.broadcast(payload, src=src, group=group)
    return payload.cpu()
