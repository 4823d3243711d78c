"""Full-state checkpoints over torch.distributed.checkpoint (DCP), exact resume, keep-latest-k.

Layout and completion marker: :mod:`ssd_train.checkpoint.files`. What is saved:

- model and optimiser through ``torch.distributed.checkpoint.state_dict.get_state_dict`` (so DDP
  and FSDP2 both work; DCP writes each shard once);
- ``shared`` (rank 0's copy; identical on every rank): step, epoch, LR schedule, pending
  evaluations, whatever the trainer puts there;
- ``per_rank`` (one file per rank, read back by the same rank): data-loader position, plus this
  rank's RNG states, captured here. DCP itself would keep only rank 0's copy of a non-DTensor
  value, so these live in ``rank-<k>.pt`` side files in the same folder.

Before saving, BN running statistics are averaged over ranks and every tensor is checked to be
finite (a checkpoint is never written with NaN/Inf; :class:`NonFiniteCheckpointError`). Saving
can be asynchronous (``dcp.async_save`` on a dedicated gloo group, so the background writer's
collectives never interleave with training's); the marker is written by rank 0 once the save
has finished on every rank. Resuming checks the world size and the run fingerprint
(:func:`run_fingerprint`) and refuses a mismatch with a message saying what differs.

Hook points for the trainer (all collective: every rank calls them at the same point):
``manager = CheckpointManager(cfg, run_dir, fingerprint=run_fingerprint(settings, world),
settings_json=...)``; ``restored = manager.resume(model, optimizer)`` before the loop (None =
fresh start); ``manager.should_save(step)`` after each optimiser step;
``manager.save(step, model, optimizer, shared=..., per_rank=..., epoch=...)``;
``manager.close()`` at the end (waits for an asynchronous save).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ssd_train.checkpoint.config import CheckpointConfig
from ssd_train.checkpoint.files import (
    CheckpointInfo,
    atomic_torch_save,
    atomic_write_bytes,
    checkpoints_dir,
    find_unsafe_value,
    inspect_checkpoint,
    latest_complete,
    list_checkpoints,
    prune,
    step_dir,
    write_marker,
)
from ssd_train.checkpoint.rank_state import (
    all_finite,
    average_batchnorm_buffers,
    capture_rng_state,
    restore_rng_state,
)

__all__ = [
    "CheckpointConfig",
    "CheckpointError",
    "CheckpointManager",
    "NonFiniteCheckpointError",
    "Restored",
    "ResumeMismatchError",
    "run_fingerprint",
]

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or resumed from; the message says why and what to do."""


class ResumeMismatchError(CheckpointError):
    """The checkpoint was written by a run with different run-defining settings or world size."""


class NonFiniteCheckpointError(CheckpointError):
    """The model or optimiser holds NaN/Inf values; no checkpoint was written."""


@dataclass
class Restored:
    """What :meth:`CheckpointManager.resume` read back (model/optimiser are loaded in place)."""

    path: Path
    step: int
    epoch: int
    shared: dict[str, Any]
    per_rank: dict[str, Any]


def run_fingerprint(settings: Any, world_size: int) -> dict[str, Any]:
    """The settings that define a run; resuming with any of them changed is refused.

    Global batch (and its split), number of classes and boxes per image. ``world_size`` is
    checked separately (with its own explanation).
    """
    data, optim, model = settings.data, settings.optim, settings.model
    accum = getattr(optim, "grad_accumulation_steps", 1)
    return {
        "global_batch_size": data.batch_size * world_size * accum,
        "per_rank_batch_size": data.batch_size,
        "grad_accumulation_steps": accum,
        "num_classes": getattr(model, "num_classes", None),
        "max_boxes": getattr(data, "max_boxes", None),
    }


def _no_dist() -> bool:
    return not (dist.is_available() and dist.is_initialized())


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class CheckpointManager:
    """Writes and finds the checkpoints of one run folder (see the module docstring for hooks)."""

    def __init__(
        self,
        cfg: CheckpointConfig,
        run_dir: Path,
        process_group: dist.ProcessGroup | None = None,
        *,
        fingerprint: Mapping[str, Any] | None = None,
        settings_json: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.rank, self.world_size = _rank_world()
        self.fingerprint = dict(fingerprint or {})
        self.settings_json = settings_json
        self.last_saved: Path | None = None  # newest complete checkpoint known to this process
        self._pending: threading.Thread | None = None
        self._pending_error: BaseException | None = None
        self.group = process_group
        if process_group is None and cfg.asynchronous and self.world_size > 1:
            # the background writer's collectives must not share a group with training's
            self.group = dist.new_group(backend="gloo")

    # ---------------------------------------------------------------- resume
    def resume_path(self) -> Path | None:
        """The checkpoint to resume from according to ``cfg.resume`` (None = fresh start)."""
        mode = self.cfg.resume
        if mode == "never":
            found = [i for i in list_checkpoints(self.run_dir) if i.usable]
            if found:
                raise CheckpointError(
                    f"checkpoint.resume is 'never' but {checkpoints_dir(self.run_dir)} already holds "
                    f"{len(found)} checkpoint(s) (newest: {found[-1].path.name}); a fresh run there would "
                    "mix two runs. Use a new --run-dir, or --checkpoint.resume auto to continue."
                )
            return None
        if mode == "auto":
            info, skipped = latest_complete(self.run_dir)
            for s in skipped:
                log.warning("skipping torn checkpoint %s: %s", s.path, s.problem)
            if info is not None:
                self.last_saved = info.path
            return info.path if info else None
        info = inspect_checkpoint(Path(mode))
        if not info.usable:
            raise CheckpointError(f"cannot resume from {mode}: {info.problem}")
        return info.path

    def check_compatible(self, info: CheckpointInfo) -> None:
        """Raise :class:`ResumeMismatchError` when the checkpoint's run differs from this one."""
        marker = info.marker or {}
        saved_world = marker.get("world_size")
        if saved_world is not None and saved_world != self.world_size:
            raise ResumeMismatchError(
                f"{info.path} was written by {saved_world} ranks, this run has {self.world_size}. "
                "Changing the world size on resume is refused: each rank's data-loader position and "
                "RNG stream are per rank and cannot be re-split exactly, and the per-rank batch (hence "
                "BatchNorm statistics) or the global batch would change. Resume with "
                f"{saved_world} ranks, or start a new run (--run-dir elsewhere or --checkpoint.resume never)."
            )
        saved = marker.get("fingerprint", {})
        diffs = [
            f"{key}: checkpoint {saved.get(key)!r}, now {self.fingerprint.get(key)!r}"
            for key in sorted(set(saved) | set(self.fingerprint))
            if saved.get(key) != self.fingerprint.get(key)
        ]
        if diffs:
            raise ResumeMismatchError(
                f"refusing to resume from {info.path}: settings that define the run differ ("
                + "; ".join(diffs)
                + "). Restore those settings, or start a new run (--run-dir elsewhere or "
                "--checkpoint.resume never)."
            )

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Restored | None:
        """Load the checkpoint chosen by ``cfg.resume`` into model and optimiser; restore RNG.

        Returns None for a fresh start. Collective. Call it right before the training loop
        (after building the data loader), since it also restores this rank's RNG states.
        """
        path = self.resume_path()
        return None if path is None else self.load(path, model, optimizer)

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> Restored:
        """Load one checkpoint folder written by :meth:`save` (see :meth:`resume`)."""
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        restored = self.load_state(path, state)
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        restore_rng_state(restored.per_rank.pop("rng"))
        return restored

    def load_state(self, path: Path, state: dict[str, Any]) -> Restored:
        """Fill ``state`` (a template with the saved DCP keys, e.g. from ``get_state_dict``) in place
        from checkpoint ``path`` and read this rank's ``per_rank`` and the ``shared`` values back.

        Checks completeness, world size and fingerprint first. Collective.
        """
        path = Path(path)
        info = inspect_checkpoint(path)
        if not info.usable:
            raise CheckpointError(f"cannot load {path}: {info.problem}")
        self.check_compatible(info)
        dcp.load(state, checkpoint_id=str(path), process_group=self.group, no_dist=_no_dist())
        mine = torch.load(path / f"rank-{self.rank}.pt", map_location="cpu", weights_only=True)
        if mine.get("rank") != self.rank:
            raise CheckpointError(
                f"{path / f'rank-{self.rank}.pt'} belongs to rank {mine.get('rank')}"
            )
        shared = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
        self.last_saved = path
        marker = info.marker or {}
        log.info("resumed from %s (step %d)", path, info.step)
        return Restored(path, info.step, int(marker.get("epoch", 0)), shared, mine["per_rank"])

    # ---------------------------------------------------------------- save
    def should_save(self, step: int, *, eval_epoch: bool = False) -> bool:
        """Whether the trainer should save after optimiser step ``step`` (1-based count)."""
        if not self.cfg.enabled:
            return False
        if eval_epoch and self.cfg.at_eval_epochs:
            return True
        every = self.cfg.every_steps
        return bool(every) and step > 0 and step % every == 0

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        shared: Mapping[str, Any],
        per_rank: Mapping[str, Any],
        epoch: int = 0,
        block: bool = False,
    ) -> Path | None:
        """Average BN buffers over ranks, then save model, optimiser, this rank's RNG and the rest.

        ``shared``: identical on every rank (rank 0's copy is written). ``per_rank``: this rank's own
        (data loader position...). See :meth:`save_state`.
        """
        if not self.cfg.enabled:
            return None
        average_batchnorm_buffers(model)
        model_sd, optim_sd = get_state_dict(model, optimizer)
        per_rank = {**per_rank, "rng": capture_rng_state()}
        return self.save_state(
            step,
            {"model": model_sd, "optim": optim_sd},
            shared=shared,
            per_rank=per_rank,
            epoch=epoch,
            block=block,
        )

    def save_state(
        self,
        step: int,
        state: dict[str, Any],
        *,
        shared: Mapping[str, Any],
        per_rank: Mapping[str, Any],
        epoch: int = 0,
        block: bool = False,
    ) -> Path | None:
        """Write checkpoint ``step-<step>`` (collective). Returns its folder, None when disabled.

        ``state``: the DCP part (model / optimiser state dicts from ``get_state_dict``; tensors
        may be DTensor shards). ``shared`` and ``per_rank`` must hold only tensors, numbers,
        strings, lists, tuples and dicts. ``block``: wait until the checkpoint is complete even
        when saving asynchronously (use it for the stop-request checkpoint).
        Raises :class:`NonFiniteCheckpointError` (nothing is written) when ``state`` holds NaN/Inf.
        """
        if not self.cfg.enabled:
            return None
        self.wait()
        for name, obj in (("shared", shared), ("per_rank", per_rank)):
            bad = find_unsafe_value(obj, name)
            if bad:
                raise CheckpointError(
                    f"cannot checkpoint {bad}: checkpoints hold only tensors, numbers, strings, lists, "
                    "tuples and dicts (so that torch.load(weights_only=True) reads them); convert it"
                )
        if not all_finite(state):
            raise NonFiniteCheckpointError(
                f"refusing to write the checkpoint of step {step}: the model or optimiser state holds "
                f"NaN/Inf values. Last good checkpoint: {self.last_saved or 'none'}."
            )
        folder = step_dir(self.run_dir, step)
        if inspect_checkpoint(folder).usable:
            log.info("checkpoint %s already exists and is complete; not rewriting it", folder)
            self.last_saved = folder
            return folder
        self._prepare_folder(folder)
        atomic_torch_save(
            {"rank": self.rank, "per_rank": dict(per_rank)}, folder / f"rank-{self.rank}.pt"
        )
        if self.rank == 0:
            atomic_torch_save(dict(shared), folder / "trainer.pt")
            if self.settings_json is not None:
                atomic_write_bytes(folder / "settings.json", self.settings_json.encode())
        marker = {
            "step": step,
            "epoch": epoch,
            "world_size": self.world_size,
            "fingerprint": self.fingerprint,
            "torch": torch.__version__,
        }
        if self.cfg.asynchronous:
            future = dcp.async_save(
                state, checkpoint_id=str(folder), process_group=self.group, no_dist=_no_dist()
            )
            self._pending = threading.Thread(
                target=self._finish,
                args=(future, folder, marker),
                name="checkpoint-finish",
                daemon=True,
            )
            self._pending.start()
            if block:
                self.wait()
        else:
            dcp.save(state, checkpoint_id=str(folder), process_group=self.group, no_dist=_no_dist())
            self._complete(folder, marker)
            if dist.is_available() and dist.is_initialized():
                dist.barrier(group=self.group)
        return folder

    def _prepare_folder(self, folder: Path) -> None:
        """Rank 0 removes a torn folder of the same step; every rank then sees an empty folder."""
        if self.rank == 0:
            if folder.exists():
                log.warning("removing torn checkpoint folder %s before rewriting it", folder)
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        if dist.is_available() and dist.is_initialized():
            dist.barrier(group=self.group)
        folder.mkdir(parents=True, exist_ok=True)

    def _finish(self, future: Any, folder: Path, marker: dict[str, Any]) -> None:
        try:
            upload = getattr(
                future, "upload_completion", future
            )  # AsyncSaveResponse in newer torch
            upload.result()
            self._complete(folder, marker)
            if not _no_dist():  # every rank's wait() returns only once the marker exists
                dist.barrier(group=self.group)
        except BaseException as e:  # reported by wait()
            self._pending_error = e

    def _complete(self, folder: Path, marker: dict[str, Any]) -> None:
        # DCP's coordinator (rank 0) writes .metadata only after every rank reported its writes,
        # and every rank wrote its side file before joining the save: rank 0 can mark it complete.
        if self.rank == 0:
            write_marker(folder, marker)
            for old in prune(self.run_dir, self.cfg.keep):
                log.info("deleted old checkpoint %s", old)
        self.last_saved = folder

    def wait(self) -> None:
        """Block until the asynchronous save in flight (if any) is complete; re-raise its error."""
        if self._pending is not None:
            self._pending.join()
            self._pending = None
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            raise CheckpointError(f"the asynchronous checkpoint save failed: {err}") from err

    def close(self) -> None:
        """Wait for the last save. Call on every rank before destroying the process group."""
        self.wait()


def read_settings(path: Path) -> dict[str, Any] | None:
    """The settings stored with a checkpoint (None if it has none)."""
    f = Path(path) / "settings.json"
    return json.loads(f.read_text()) if f.is_file() else None
