"""Wires the resilience components into a :class:`ssd_train.trainer.Trainer` through its hook points.

``attach_resilience(trainer)`` (call it at the end of ``Trainer.__init__``, on every rank) sets:

- ``trainer.checkpointer``: :class:`TrainerCheckpointer` (``maybe_resume``, ``due``, ``save``,
  ``at_eval_epochs``, ``last_checkpoint``, ``close``) over :class:`CheckpointManager`, saving
  ``trainer.state_dict()``: model/optimiser through DCP, ``data`` and ``rng`` per rank, the rest
  (schedule, progress, evaluation bookkeeping) from rank 0;
- ``trainer.stop_request``: :class:`StopRequest` with SIGTERM/SIGUSR1 handlers installed;
- ``trainer.watchdog``: a started :class:`StepWatchdog` (None when disabled);
- ``trainer.exporter``: :class:`WeightsExporter` (best.pt / last.pt);
- test-only fault injection on the model when ``resilience.faults`` asks for it.

Settings come from ``settings.checkpoint`` and ``settings.resilience``; while the root settings
have no ``resilience`` section, it is read from ``SSD_RESILIENCE__*`` environment variables.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from ssd_train.checkpoint.config import CheckpointConfig
from ssd_train.checkpoint.manager import CheckpointManager, run_fingerprint
from ssd_train.checkpoint.rank_state import average_batchnorm_buffers
from ssd_train.checkpoint.weights import WeightsExporter
from ssd_train.distributed import elastic_restart_store
from ssd_train.resilience.config import (
    FaultInjectionConfig,
    NonFiniteConfig,
    PreemptionConfig,
    ResilienceConfig,
    WatchdogConfig,
)
from ssd_train.resilience.fault_injection import FaultInjector
from ssd_train.resilience.nonfinite import NonFiniteSkipper
from ssd_train.resilience.preemption import StopRequest
from ssd_train.resilience.watchdog import StepWatchdog

log = logging.getLogger(__name__)

__all__ = ["attach_resilience", "elastic_restart_store", "resilience_settings"]

_DCP_KEYS = ("model", "optimizer")
_PER_RANK_KEYS = ("data", "rng")


class _ResilienceFromEnv(BaseSettings):
    """``SSD_RESILIENCE__...`` environment variables, used while Settings lacks the section."""

    model_config = SettingsConfigDict(
        env_prefix="SSD_RESILIENCE__", env_nested_delimiter="__", extra="ignore"
    )

    preemption: PreemptionConfig = PreemptionConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    nonfinite: NonFiniteConfig = NonFiniteConfig()
    faults: FaultInjectionConfig = FaultInjectionConfig()


def resilience_settings(settings: Any) -> ResilienceConfig:
    """``settings.resilience`` if the root settings have it, else the environment's values."""
    found = getattr(settings, "resilience", None)
    if isinstance(found, ResilienceConfig):
        return found
    return ResilienceConfig(**_ResilienceFromEnv().model_dump())


class TrainerCheckpointer:
    """The trainer's ``checkpointer`` hook object (see the module docstring)."""

    def __init__(self, manager: CheckpointManager, stop_request: StopRequest | None = None) -> None:
        self.manager = manager
        self.stop_request = stop_request

    @property
    def cfg(self) -> CheckpointConfig:
        return self.manager.cfg

    @property
    def at_eval_epochs(self) -> bool:
        return self.cfg.enabled and self.cfg.at_eval_epochs

    @property
    def last_checkpoint(self) -> Path | None:
        return self.manager.last_saved

    def due(self, step: int) -> bool:
        return self.manager.should_save(step)

    def maybe_resume(self, trainer: Any) -> Path | None:
        """Load the checkpoint chosen by ``checkpoint.resume`` into the trainer (collective)."""
        path = self.manager.resume_path()
        if path is None:
            return None
        template = trainer.state_dict()
        dcp_state = {k: template[k] for k in _DCP_KEYS}
        restored = self.manager.load_state(path, dcp_state)
        trainer.load_state_dict({**restored.shared, **restored.per_rank, **dcp_state})
        message = f"resumed from {path} (step {trainer.step}, epoch {trainer.epoch})"
        reporter = getattr(trainer, "reporter", None)
        if reporter is not None and hasattr(reporter, "message"):
            reporter.message(message)
        else:
            print(message, file=sys.stderr)
        return path

    def save(self, trainer: Any, reason: str = "periodic") -> Path | None:
        """Save ``trainer.state_dict()`` as step-<trainer.step> (collective). On ``reason="stop"``
        the save is synchronous and rank 0 then writes the requeue marker."""
        stop = reason == "stop"
        path = None
        if self.cfg.enabled:
            average_batchnorm_buffers(trainer.model)
            sd = trainer.state_dict()
            path = self.manager.save_state(
                int(trainer.step),
                {k: sd.pop(k) for k in _DCP_KEYS},
                per_rank={k: sd.pop(k) for k in _PER_RANK_KEYS if k in sd},
                shared=sd,
                epoch=int(trainer.epoch),
                block=stop,
            )
        if stop and self.stop_request is not None:
            self.stop_request.acknowledge(int(trainer.step), path)
        return path

    def close(self) -> None:
        self.manager.close()


def attach_resilience(trainer: Any) -> None:
    """Set the trainer's resilience hook objects from its settings (every rank; see module doc)."""
    s = trainer.settings
    res = resilience_settings(s)
    ctx, run_dir = trainer.ctx, Path(trainer.run_dir)
    settings_json = s.model_dump_json() if hasattr(s, "model_dump_json") else None
    manager = CheckpointManager(
        s.checkpoint,
        run_dir,
        fingerprint=run_fingerprint(s, ctx.world_size),
        settings_json=settings_json,
    )
    stop = StopRequest(run_dir, res.preemption, device=ctx.device).install()
    stop.clear_stale_marker()
    trainer.stop_request = stop
    trainer.checkpointer = TrainerCheckpointer(manager, stop)
    trainer.watchdog = (
        StepWatchdog(run_dir, ctx.rank, res.watchdog).start() if res.watchdog.enabled else None
    )
    trainer.exporter = WeightsExporter(run_dir, s.model_dump(mode="json"), ctx.rank)
    if res.nonfinite.policy == "skip":
        # the trainer must then not stop on its own non-finite flag (see nonfinite.py)
        trainer.nonfinite_skipper = NonFiniteSkipper(trainer.optimizer, res.nonfinite)
    injector = FaultInjector(res.faults, run_dir, ctx.rank, lambda: int(trainer.step))
    if injector.active:
        injector.install(getattr(trainer.components, "eval_model", trainer.model))
        trainer.fault_injector = injector
