"""The trainer's full state for checkpoints, and the compile warm-up that must not change it.

:func:`trainer_state_dict` / :func:`load_trainer_state` back ``Trainer.state_dict`` /
``Trainer.load_state_dict``: model and optimiser (``torch.distributed.checkpoint.state_dict``, no
``module.`` prefix, DTensor shards under FSDP2), LR schedule parameters, progress (step, epoch,
seed, global batch, world size), the data loader's position, this rank's RNG states and the
evaluation bookkeeping (results, counts, best mAP). Everything is tensors, numbers, strings, lists
and dicts, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from ssd_eval.result import EvalResult

if TYPE_CHECKING:
    from ssd_train.trainer import Trainer


def trainer_state_dict(trainer: Trainer) -> dict[str, Any]:
    """Everything a resume needs: model, optimiser, schedule, progress, data position, RNG, evals.

    Model and optimiser states come from ``torch.distributed.checkpoint.state_dict`` (no
    ``module.`` prefix; DTensor shards under FSDP2). Pending asynchronous evaluations must be
    settled first (``_save_checkpoint`` does it), so none are in flight.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from ssd_train.checkpoint.rank_state import capture_rng_state

    model_sd, optim_sd = get_state_dict(trainer.model, trainer.optimizer)
    return {
        "model": model_sd,
        "optimizer": optim_sd,
        "schedule": trainer.schedule.state_dict() if trainer.schedule else {},
        "progress": {
            "step": trainer.step,
            "epoch": trainer.epoch,
            "seed": trainer.seed,
            "global_batch": trainer.global_batch,
            "world_size": trainer.ctx.world_size,
        },
        "data": trainer.train_loader.state_dict() if trainer.train_loader is not None else {},
        "rng": capture_rng_state(),
        "evaluation": {
            "results": [
                [r.epoch if r.epoch is not None else -1, *r.stats] for r in trainer.results
            ],
            "submitted": trainer.evals_submitted,
            "received": trainer.evals_received,
            "best_map": trainer.best_map,
        },
    }


def load_trainer_state(trainer: Trainer, state: dict[str, Any]) -> None:
    """Inverse of :meth:`state_dict` (call after the data loaders exist)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from ssd_train.checkpoint.rank_state import restore_rng_state

    set_state_dict(
        trainer.model,
        trainer.optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )
    progress = state["progress"]
    trainer.step, trainer.epoch = int(progress["step"]), int(progress["epoch"])
    if trainer.train_loader is not None and state.get("data"):
        trainer.train_loader.load_state_dict(state["data"])
    if state.get("rng"):
        restore_rng_state(state["rng"])
    ev = state["evaluation"]
    trainer.results = [
        EvalResult.from_stats(list(row[1:]), None if row[0] < 0 else int(row[0]))
        for row in ev["results"]
    ]
    trainer.evals_submitted = trainer.evals_received = int(ev["received"])
    trainer.best_map = float(ev["best_map"])


def warm_up_compiled_step(trainer: Trainer) -> None:
    """Compile before run_start: forward/backward on synthetic tensors, then restore all state."""
    from ssd_train.benchmark import synthetic_batch

    model = trainer.components.eval_model
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batch = synthetic_batch(
        trainer.settings.data.batch_size,
        trainer.settings.data.max_boxes,
        trainer.settings.model.num_classes,
        trainer.ctx.device,
        seed=trainer.seed,
    )
    step = trainer.components.train_step
    total, _, _ = step.loss_fn(
        trainer.model,
        step.criterion,
        batch.images,
        batch.boxes,
        batch.labels,
        step.autocast_dtype,
        step.channels_last,
    )
    total.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(saved[k])
