"""Config sections owned by the trainer: optimiser, schedule, distributed, runtime, benchmark, synthetic data.

Each section is a small pydantic model with defaults, a description per field and validation; the
root :class:`ssd_train.settings.Settings` composes them with the packages' own sections. The
defaults describe the CPU default job (synthetic data, open division); the MLPerf presets in
``infra/configs/`` set every hyperparameter of a benchmark run explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SettingsSection(BaseModel):
    """Base of ssd_train's settings sections: an unknown key is an error; assignments are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def subsection(section: type[BaseModel], description: str) -> Any:
    """A settings field holding ``section`` with its defaults, described for ``--help``."""
    return Field(default_factory=section, description=description)


class OptimConfig(SettingsSection):
    """SGD with momentum (spec 5.1): the only optimiser MLPerf v0.7 SSD allows in this form."""

    lr_per_32: float = Field(
        0.08,
        gt=0,
        description="LR per 32 images (NVIDIA's --lr). Base LR = 2.5e-3 * max(1, round(lr_per_32 / 2.5e-3"
        " * global_batch / 32)), the MLPerf rounding to a multiple of 2.5e-3.",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (MLPerf: 0.9).")
    weight_decay: float = Field(
        5e-4, ge=0, description="L2 weight decay (reference 5e-4; the presets use NVIDIA's values)."
    )
    exclude_bn_and_bias_from_weight_decay: bool = Field(
        False,
        description="Exclude BatchNorm weights and all biases from weight decay (MLPerf runs decay every parameter).",
    )
    grad_clip_norm: float | None = Field(
        5.0,
        ge=0,
        description="Clip the global gradient norm to this value (0 or None = off; off in the MLPerf presets,"
        " on in the CPU default job, whose from-scratch model diverges without it).",
    )

    @field_validator("grad_clip_norm")
    @classmethod
    def _zero_means_off(cls, value: float | None) -> float | None:
        return None if value == 0 else value

    grad_accumulation_steps: int = Field(
        1,
        ge=1,
        description="Micro-batches per optimiser step; each micro-batch's loss is scaled by its share."
        " Global batch = data.batch_size * world_size * grad_accumulation_steps.",
    )


class ScheduleConfig(SettingsSection):
    """Learning-rate schedule, evaluation schedule and stopping rule (spec 5.1, 6.1)."""

    max_epochs: int = Field(
        8, ge=1, description="Stop after this many epochs (MLPerf presets: 80)."
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        description="Stop after this many optimiser steps (short runs and tests; a run that stops here"
        " without reaching the target is logged as aborted).",
    )
    warmup_iterations: int = Field(
        20,
        ge=0,
        description="Linear LR warm-up from exactly 0 at iteration 0 over this many optimiser steps.",
    )
    warmup_factor: float = Field(
        0.0,
        ge=0,
        description="Reference warm-up factor: start at base*(1 - 2**-factor); 0 = from 0.",
    )
    decay_epochs: list[int] = Field(
        default_factory=lambda: [4],
        description="0-based epochs at whose start the LR is multiplied by decay_factor (MLPerf: [44, 55]).",
    )
    decay_factor: float = Field(0.1, gt=0, le=1, description="LR multiplier at each decay epoch.")
    eval_epochs: list[int] = Field(
        default_factory=lambda: [5],
        description="Evaluate after these epochs (1-based count of finished epochs; the MLPerf presets, as NVIDIA v0.7: [40, 50, 55, 60, 65, 70, 75]).",
    )
    eval_interval: int = Field(
        1,
        ge=0,
        description="After the last of eval_epochs, evaluate every this many epochs (0 = never; the MLPerf presets list every evaluation epoch and use 0).",
    )
    target_map: float = Field(
        0.23,
        gt=0,
        le=1,
        description="Stop as soon as COCO box mAP@[.5:.95] reaches this (MLPerf: 0.23).",
    )

    @model_validator(mode="after")
    def _check_epochs(self) -> ScheduleConfig:
        for name in ("decay_epochs", "eval_epochs"):
            values = getattr(self, name)
            if any(v < 0 for v in values):
                raise ValueError(f"{name} must be non-negative epochs, got {values}")
            if list(values) != sorted(set(values)):
                raise ValueError(f"{name} must be strictly increasing, got {values}")
        return self

    def is_eval_epoch(self, epochs_done: int) -> bool:
        """Whether to evaluate after ``epochs_done`` finished epochs (1-based)."""
        if epochs_done in self.eval_epochs:
            return True
        last = self.eval_epochs[-1] if self.eval_epochs else 0
        return (
            self.eval_interval > 0
            and epochs_done > last
            and (epochs_done - last) % self.eval_interval == 0
        )


class DistributedConfig(SettingsSection):
    """How ranks are wrapped and talk to each other (launch with torchrun; one process per device)."""

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="Data-parallel wrapper: DistributedDataParallel or FSDP2 (fully_shard)."
    )
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="Process-group backend; auto = nccl on CUDA, gloo on CPU."
    )
    init_timeout_s: float = Field(
        1800.0, gt=0, description="Collective timeout while starting and compiling (seconds)."
    )
    timeout_s: float = Field(
        600.0, gt=0, description="Collective timeout after the first training steps (seconds)."
    )
    bucket_cap_mb: int = Field(25, ge=1, description="DDP gradient bucket size in MiB.")


class BenchmarkConfig(SettingsSection):
    """``--mode benchmark``: time the training step on synthetic device tensors (no dataset)."""

    warmup_steps: int = Field(
        5, ge=0, description="Untimed steps first (compilation, allocator warm-up)."
    )
    timed_steps: int = Field(
        20, ge=1, description="Timed steps; img/s = global batch * steps / seconds."
    )
    boxes_per_image: int = Field(
        8, ge=1, description="Random ground-truth boxes per synthetic image (rest is padding)."
    )
    json_path: Path | None = Field(
        None,
        alias="json",
        description="Also write the result as JSON to this file (--benchmark.json FILE): img_per_s, step_ms,"
        " graph_breaks, graphs, recompiles, peak_memory_bytes, peak_memory_kind, device, precision,"
        " compile_mode, batch_size, world_size, ops_per_step, syncs_per_step, sync_ops,"
        " cudagraph_skips.",
    )
    trace_path: Path | None = Field(
        None,
        alias="trace",
        description="Also profile untimed steps after the timed ones with torch.profiler and write"
        " a Chrome/Perfetto trace to this file (--benchmark.trace FILE; a .gz name compresses it).",
    )
    trace_steps: int = Field(10, ge=1, description="Steps in the --benchmark.trace profile.")


class SyntheticConfig(SettingsSection):
    """The synthetic COCO-format dataset used when ``data.root`` is unset (the default job)."""

    difficulty: str = Field(
        "starter",
        description="How hard the synthetic images are: starter, easy, medium or hard (more classes,"
        " smaller objects, more clutter).",
    )
    train_images: int = Field(128, ge=1, description="Synthetic training images.")
    val_images: int = Field(48, ge=1, description="Synthetic validation images.")
    seed: int = Field(0, description="Seed of the synthetic generator (not of training).")
    categories: Literal["used", "all"] = Field(
        "used",
        description="Categories listed in the jsons: 'used' = only those the difficulty draws (model.num_classes"
        " is set to their count + 1; learns faster), 'all' = COCO's 80 (num_classes 81).",
    )
    cache_dir: Path = Field(
        Path("~/.cache/ssd-mlperf").expanduser(),
        description="Where generated datasets are cached (synthetic-<difficulty>-<n> folders).",
    )
