"""Per-rank and cross-rank state helpers for checkpoints: RNG states and finiteness.

Everything here stores as plain tensors, ints and tuples so that ``torch.load(weights_only=True)``
reads it back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils._pytree import tree_leaves


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states: torch CPU, the current CUDA device (if initialised), numpy, random."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (the CUDA state goes to the current device)."""
    torch.set_rng_state(state["torch"])
    npk = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npk["key"].numpy().astype(np.uint32),
            npk["pos"],
            npk["has_gauss"],
            npk["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), the tensor itself otherwise."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


@torch.no_grad()
def all_finite(
    tensors: Any, group: dist.ProcessGroup | None = None, device: torch.device | None = None
) -> bool:
    """Whether every floating-point tensor in a (nested) structure is finite on EVERY rank.

    One host sync and, in a process group, one all-reduce; every rank must call it.
    """
    leaves = [
        _local(t)
        for t in tree_leaves(tensors)
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    ]
    flags = [torch.isfinite(t).all() for t in leaves if t.numel() > 0]
    if device is None:
        device = flags[0].device if flags else torch.device("cpu")
    ok = (
        torch.stack([f.to(device) for f in flags]).all()
        if flags
        else torch.tensor(True, device=device)
    )
    flag = ok.to(torch.int32).reshape(1)
    if _distributed():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
    return bool(flag.item())
