"""Run-level decisions made once at start-up: the run folder, seed, config.json, the MLPerf log's
header (division, platform, hyperparameters), and how a run ended."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ssd_train.distributed import DistributedContext, broadcast_object, broadcast_seed
from ssd_train.report.mlperf_log import (
    MLPerfHyperparameters,
    MLPerfLogger,
    describe_platform,
    resolve_division,
)
from ssd_train.settings import Settings, settings_json


def resolve_run_dir(run_dir: Path | None, ctx: DistributedContext) -> Path:
    """``run_dir`` or ``runs/<UTC timestamp>`` chosen on rank 0 (same folder on every rank); created."""
    if run_dir is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / stamp
    path = Path(broadcast_object(str(run_dir)))
    if ctx.is_main:
        path.mkdir(parents=True, exist_ok=True)
    return path


SEED_FILE = "seed"
CACHE_CLEARED_ENV = "MLPERF_CACHE_CLEARED"


def resolve_seed(seed: int | None, run_dir: Path, ctx: DistributedContext) -> int:
    """The master seed, the same on every rank, recorded in ``<run dir>/seed`` by rank 0.

    ``seed`` when set; otherwise the seed this run folder was started with, so that a resumed
    segment (preemption, ``torchrun --max-restarts``) continues the same data order and its saved
    loader position stays valid; otherwise a random draw on rank 0 (``broadcast_seed``).
    """
    path = run_dir / SEED_FILE
    if seed is None and ctx.is_main and path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        try:
            seed = int(text)
        except ValueError:
            raise ValueError(
                f"{path} should hold the run's integer seed, found {text!r}: delete the file to"
                " draw a new seed, or pass --seed"
            ) from None
    seed = broadcast_seed(seed)
    if ctx.is_main:
        tmp = path.with_name(SEED_FILE + ".tmp")
        tmp.write_text(f"{seed}\n", encoding="utf-8")
        tmp.replace(path)
    return seed


def caches_cleared() -> bool:
    """Whether the launcher dropped the page cache before this run (logged as ``cache_clear``).

    ``infra/slurm/run.sub`` and ``infra/docker/run_with_docker.sh`` export
    ``MLPERF_CACHE_CLEARED=true|false``; without it nothing was cleared, and the log says so.
    """
    return os.environ.get(CACHE_CLEARED_ENV, "false").strip().lower() in ("1", "true", "yes")


def write_config(settings: Settings, run_dir: Path, ctx: DistributedContext) -> Path:
    """Write the resolved settings to ``<run dir>/config.json`` (rank 0)."""
    path = run_dir / "config.json"
    if ctx.is_main:
        data = settings.model_copy(update={"run_dir": run_dir})
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(settings_json(data) + "\n", encoding="utf-8")
        tmp.replace(path)
    return path


def mlperf_hyperparameters(
    settings: Settings, seed: int, global_batch: int, base_lr: float
) -> MLPerfHyperparameters:
    """The values the closed SSD rules want logged: the settings plus the run's global batch
    (``Settings.global_batch_size``) and base LR (``Settings.base_learning_rate``)."""
    return MLPerfHyperparameters(
        seed=seed,
        global_batch_size=global_batch,
        model_bn_span=settings.data.batch_size,
        base_learning_rate=base_lr,
        weight_decay=settings.optim.weight_decay,
        warmup_steps=settings.schedule.warmup_iterations,
        warmup_factor=settings.schedule.warmup_factor,
        decay_boundary_epochs=list(settings.schedule.decay_epochs),
        max_samples=settings.data.crop_attempts,
        gradient_accumulation_steps=settings.optim.grad_accumulation_steps,
        decay_factor=settings.schedule.decay_factor,
    )


def run_hyperparameters(settings: Settings, seed: int, world_size: int) -> MLPerfHyperparameters:
    """:func:`mlperf_hyperparameters` of a run on ``world_size`` ranks: where the run's global
    batch and base LR are computed (:func:`start_run` hands them on in :class:`RunStart`)."""
    global_batch = settings.global_batch_size(world_size)
    return mlperf_hyperparameters(
        settings, seed, global_batch, settings.base_learning_rate(world_size)
    )


def mlperf_division(settings: Settings, hp: MLPerfHyperparameters, *, synthetic_data: bool) -> str:
    """closed for real runs whose settings can pass the closed rules, open otherwise (interfaces.md)."""
    return resolve_division(
        settings.logging.mlperf.division,
        real_dataset=not synthetic_data,
        hp=hp,
        target_map=settings.schedule.target_map,
    )


def planned_division(settings: Settings, world_size: int, *, synthetic_data: bool) -> str:
    """The division :func:`start_run` will log, known before start-up (the seed plays no part).

    Raises:
        ValueError: ``division = "closed"`` with settings that cannot pass the closed rules.
    """
    hp = run_hyperparameters(settings, 0, world_size)
    return mlperf_division(settings, hp, synthetic_data=synthetic_data)


def platform_name(settings: Settings, ctx: DistributedContext) -> str:
    """submission_platform: the setting, or '<world>x<device name>'."""
    if settings.logging.mlperf.platform:
        return settings.logging.mlperf.platform
    name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "CPU"
    return describe_platform(ctx.world_size, name)


RunStatus = Literal["success", "aborted"]


@dataclass
class RunOutcome:
    """How a training run ended."""

    status: RunStatus
    reason: str
    run_dir: Path
    steps: int
    epochs_done: int
    best_map: float
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RunStart:
    """What start-up decided: the run folder, the master seed, the global batch (images per
    optimiser step over all ranks), the base LR, and the MLPerf log (init phase open)."""

    run_dir: Path
    seed: int
    global_batch: int
    base_lr: float
    mllog: MLPerfLogger


def start_run(settings: Settings, ctx: DistributedContext, *, synthetic_data: bool) -> RunStart:
    """Run folder, seed, config.json, then the MLPerf log in MLPerf's order: submission header,
    cache_clear, init_start, hyperparameters (every rank; rank 0 writes)."""
    run_dir = resolve_run_dir(settings.run_dir, ctx)
    seed = resolve_seed(settings.seed, run_dir, ctx)
    hp = run_hyperparameters(settings, seed, ctx.world_size)
    division = mlperf_division(settings, hp, synthetic_data=synthetic_data)
    write_config(settings, run_dir, ctx)
    mllog = MLPerfLogger(run_dir, settings.logging.mlperf, rank=ctx.rank)
    mllog.submission_info(division, platform_name(settings, ctx))
    mllog.cache_clear(caches_cleared())
    mllog.init_start()
    mllog.hyperparameters(hp)
    return RunStart(run_dir, seed, hp.global_batch_size, hp.base_learning_rate, mllog)
