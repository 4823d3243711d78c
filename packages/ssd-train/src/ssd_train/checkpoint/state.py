"""The layout of a training state (:func:`training_state`), its inverse, what a load returns
(:class:`Restored`) and the run fingerprint.

:class:`ssd_train.checkpoint.manager.CheckpointManager` saves and loads states in this layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ssd_train.checkpoint.rank_state import capture_rng_state, restore_rng_state

DCP_KEYS = ("model", "optimizer")
"""Parts of a state written through torch.distributed.checkpoint (sharded as the model is)."""
PER_RANK_KEYS = ("data", "rng")
"""Parts of a state that are this rank's own (``rank-<k>.pt``); every other key is shared."""


@dataclass
class Restored:
    """What :meth:`CheckpointManager.load` read back: the folder, its step and epoch, and the
    state (same layout as the template; its DCP parts are the template's, filled in place)."""

    path: Path
    step: int
    epoch: int
    state: dict[str, Any]


def training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, **rest: Any
) -> dict[str, Any]:
    """A state dict in the manager's layout: model and optimiser (``get_state_dict``: no ``module.``
    prefix, DTensor shards under FSDP2), this process's RNG states, and ``rest`` (``data`` for the
    loader position, anything else shared). Also the template for :meth:`CheckpointManager.load`."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optimizer": optim_sd, "rng": capture_rng_state(), **rest}


def apply_training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
) -> None:
    """Inverse of :func:`training_state` for model, optimiser and RNG (the caller restores the rest)."""
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
    if state.get("rng"):
        restore_rng_state(state["rng"])


def run_fingerprint(settings: Any, world_size: int) -> dict[str, Any]:
    """The settings that define a run; resuming with any of them changed is refused.

    Global batch (and its split), number of classes and boxes per image. ``world_size`` is
    checked separately (with its own explanation).
    """
    return {
        "global_batch_size": settings.global_batch_size(world_size),
        "per_rank_batch_size": settings.data.batch_size,
        "grad_accumulation_steps": settings.optim.grad_accumulation_steps,
        "num_classes": settings.model.num_classes,
        "max_boxes": settings.data.max_boxes,
    }
