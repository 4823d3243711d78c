"""The optimiser: ``torch.optim.SGD`` with momentum and weight decay, as MLPerf v0.7 SSD requires (spec 5.1, 8)."""

from __future__ import annotations

import torch
from torch import nn

from ssd_train.trainer_config import OptimConfig


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, object]]:
    """One group with decay on every parameter (MLPerf), or two when BN weights and biases are excluded."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.exclude_bn_and_bias_from_weight_decay:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    no_decay: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name == "bias":
                no_decay.add(id(p))
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.SGD:
    """SGD(momentum, weight decay), built with the fused kernel (CUDA and CPU alike).

    Each param group's ``lr`` is its own float32 0-d tensor on ``device``, 0 until the schedule
    fills it in place (``LRSchedule.apply``): a compiled optimiser step reads it as a graph input,
    so a new LR value never recompiles, and the fused kernel reads it on the device, so an eager
    step never syncs with the host (the ``foreach`` path turns a tensor LR into a Python number
    with ``.item()``). ``ssd_train.train_step.TrainStep`` switches a compiled update and FSDP2 to
    the foreach kernels (Dynamo does not trace fused optimizers; DTensor has no fused SGD).
    """
    groups = parameter_groups(model, cfg)
    for group in groups:
        group["lr"] = torch.zeros((), dtype=torch.float32, device=device)
    return torch.optim.SGD(
        groups,
        lr=torch.zeros((), dtype=torch.float32, device=device),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        fused=True,
    )


def device_learning_rates(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make every param group's ``lr`` a float32 0-d tensor on ``device`` again.

    Loading an optimiser state dict (``set_state_dict`` / ``load_state_dict``) replaces the
    groups' LR tensors with the checkpoint's, which may be host tensors or floats; call this after
    a load. Tensors already right are kept (same objects: no recompilation).
    """
    for group in optimizer.param_groups:
        lr = group["lr"]
        ok = (
            isinstance(lr, torch.Tensor)
            and lr.dtype == torch.float32
            and lr.device.type == device.type
            and (device.index is None or lr.device.index == device.index)
        )
        if not ok:
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)


def select_sgd_kernels(optimizer: torch.optim.Optimizer, fused: bool) -> None:
    """Make every param group use SGD's fused kernel (``fused``) or the foreach ones.

    The fused kernel reads a tensor LR on the device (no host sync); Dynamo does not trace fused
    optimizers (a graph break) and DTensor has no fused SGD, so a compiled update and FSDP2 use
    foreach (compiled, Inductor fuses it; eager under FSDP2 it reads the LR with ``.item()``).
    ``TrainStep`` sets the flags before each update (a checkpoint load restores the saved ones);
    the same values every step, so a compiled update's guards on them hold.
    """
    for group in optimizer.param_groups:
        if "fused" in group and (group["fused"] is not fused or group.get("foreach") is fused):
            group["fused"], group["foreach"] = fused, not fused


def has_step_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """Whether optimiser step pre/post hooks (its own or global) are registered."""
    from torch.optim import optimizer as optim_module

    return any(
        bool(hooks)
        for hooks in (
            getattr(optimizer, "_optimizer_step_pre_hooks", None),
            getattr(optimizer, "_optimizer_step_post_hooks", None),
            getattr(optim_module, "_global_optimizer_pre_hooks", None),
            getattr(optim_module, "_global_optimizer_post_hooks", None),
        )
    )
