"""The `logging` section of the settings: console progress, metrics, plots, MLPerf log, wandb.

The trainer composes `LoggingConfig` into `ssd_train.settings.Settings` as `logging`; from the
command line its fields read e.g. `--logging.log_every 20` or `--logging.wandb.enabled true`, from
the environment `SSD_LOGGING__WANDB__ENABLED=true`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Division = Literal["closed", "open"]
SubmissionStatus = Literal["cloud", "onprem", "preview", "research"]


class MLPerfConfig(BaseModel):
    """Values of the MLPerf `submission_*` keys and the division rule."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Write <run dir>/mlperf.log (rank 0).")
    org: str = Field(
        "community",
        min_length=1,
        description="submission_org: the organisation submitting the result.",
    )
    platform: str | None = Field(
        None,
        description=(
            "submission_platform; default '<world size>x<device name>', e.g. '8xNVIDIA H100 80GB HBM3'."
        ),
    )
    status: SubmissionStatus = Field(
        "onprem", description="submission_status: cloud, onprem, preview or research."
    )
    division: Literal["auto", "closed", "open"] = Field(
        "auto",
        description=(
            "submission_division. 'auto': closed for runs on a real dataset whose hyperparameters "
            "meet the closed SSD rules (target mAP >= 0.23, warm-up >= 1 step, decay epochs of "
            "the form [40, 50]x(1 + k/10)), open otherwise (synthetic data, short runs)."
        ),
    )
    echo_stdout: bool = Field(
        False,
        description="Also print the ':::MLLOG' lines to the console (they always go to mlperf.log).",
    )


class WandbConfig(BaseModel):
    """Weights & Biases logging (rank 0 only)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Log metrics to Weights & Biases.")
    project: str = Field("ssd-mlperf", min_length=1, description="wandb project name.")
    entity: str | None = Field(None, description="wandb entity (user or team); default: yours.")
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto",
        description=(
            "'auto': online when an API key is known (WANDB_API_KEY or `wandb login`), "
            "offline otherwise; WANDB_MODE in the environment overrides 'auto'."
        ),
    )


class LoggingConfig(BaseModel):
    """What rank 0 shows and keeps: progress bar, metrics.jsonl, plots, MLPerf log, wandb."""

    model_config = ConfigDict(extra="forbid")

    log_every: int = Field(
        10,
        ge=1,
        description=(
            "Logging step interval: losses are read back from the device (a host sync) and "
            "written to metrics.jsonl, the console and wandb every this many steps."
        ),
    )
    progress: Literal["auto", "bar", "lines", "off"] = Field(
        "auto",
        description=(
            "Console progress: 'bar' redraws a progress bar, 'lines' prints one line per logging "
            "step (Slurm logs), 'auto' picks 'bar' when stdout is a terminal."
        ),
    )
    plots: bool = Field(
        True,
        description="Write results.png, train_batch.jpg, val_predictions.jpg and the best "
        "evaluation's pr_curves.png and confusion_matrix.png to the run folder.",
    )
    draw_images: int = Field(
        16, ge=1, le=64, description="Images per drawn training batch / validation grid."
    )
    mlperf: MLPerfConfig = Field(default_factory=MLPerfConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
