"""Settings of full-state checkpoints: the ``checkpoint`` section (``--checkpoint.every-steps 500``,
``--checkpoint.resume never``, ``SSD_CHECKPOINT__KEEP=3``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from ssd_train.trainer_config import SettingsSection


class CheckpointConfig(SettingsSection):
    """Full-state checkpoints (torch.distributed.checkpoint) in <run dir>/checkpoints/step-N/."""

    enabled: bool = Field(
        True,
        description="Write checkpoints at all (periodic, at evaluation epochs, on a stop request)."
        " Off: a stop request still stops cleanly but nothing is saved.",
    )
    every_steps: int | None = Field(
        1000,
        ge=0,
        description="Save every this many optimiser steps (0 or None = no periodic saves; the MLPerf"
        " presets turn them off, as the timed submissions did).",
    )
    at_eval_epochs: bool = Field(
        True, description="Save at each evaluation epoch (before the evaluation starts)."
    )
    keep: int = Field(
        2, ge=1, description="Keep the latest k complete checkpoints; older ones are deleted."
    )
    asynchronous: bool = Field(
        True,
        description="Write with dcp.async_save on a separate gloo group so training does not wait on"
        " disk (the state is copied to host memory first); a save waits for the previous one.",
    )
    resume: str = Field(
        "auto",
        description="'auto': resume from the latest complete checkpoint in the run folder if any;"
        " 'never': start fresh (refused if the run folder already holds checkpoints); or the path of"
        " a checkpoint folder (checkpoints/step-N).",
    )

    @field_validator("resume")
    @classmethod
    def _check_resume(cls, value: str) -> str:
        if value in ("auto", "never"):
            return value
        if not Path(value).expanduser().is_dir():
            raise ValueError(
                f"checkpoint.resume must be 'auto', 'never' or an existing checkpoint folder "
                f"(<run dir>/checkpoints/step-N); {value!r} is none of these"
            )
        return value
