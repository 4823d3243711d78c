"""Full-state checkpoints over torch.distributed.checkpoint (DCP), exact resume, keep-latest-k.

One API for the trainer and the tests: ``path = manager.save(step, state, epoch=...)`` and
``restored = manager.load(path, template)``, with ``manager.resume_path()`` choosing the folder to
resume from (``checkpoint.resume``) and ``manager.due(step)`` saying when a periodic save is due.
Every call is collective (every rank calls it at the same point).

``state`` is a dict laid out as :func:`training_state` builds it; the manager decides where each
part goes:

- ``"model"`` and ``"optimizer"`` (from ``torch.distributed.checkpoint.state_dict.get_state_dict``,
  so DDP and FSDP2 both work) go through DCP, which writes each shard once;
- ``"data"`` and ``"rng"`` are this rank's own (data-loader position, RNG states): DCP would keep
  only rank 0's copy of a non-DTensor value, so they go to ``rank-<k>.pt`` side files;
- every other key is identical on every rank (progress, LR schedule, evaluation bookkeeping) and
  rank 0 writes it to ``trainer.pt``.

Every tensor is checked to be finite before anything is written (a checkpoint never holds NaN/Inf;
:class:`NonFiniteCheckpointError`). Saving can be asynchronous (``dcp.async_save`` on a dedicated
gloo group, so the background writer's collectives never interleave with training's); the marker
is written by rank 0 once the save has finished on every rank. Loading checks completeness, the
world size and the run fingerprint (:func:`run_fingerprint`) and refuses a mismatch with a message
saying what differs. Layout and completion marker: :mod:`ssd_train.checkpoint.files`.
"""

from __future__ import annotations

import logging
import shutil
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from ssd_train.checkpoint.config import CheckpointConfig
from ssd_train.checkpoint.files import (
    CheckpointError,
    CheckpointInfo,
    atomic_torch_save,
    atomic_write_bytes,
    checkpoints_dir,
    find_unsafe_value,
    inspect_checkpoint,
    latest_complete,
    list_checkpoints,
    prune,
    read_part,
    step_dir,
    write_marker,
)
from ssd_train.checkpoint.rank_state import all_finite
from ssd_train.checkpoint.state import (
    DCP_KEYS,
    PER_RANK_KEYS,
    Restored,
    apply_training_state,
    run_fingerprint,
    training_state,
)
from ssd_train.resilience.environment import (
    checkpoint_write_failure,
    tensor_bytes,
    warn_if_low_space,
)

__all__ = [
    "CheckpointConfig",
    "CheckpointError",
    "CheckpointManager",
    "NonFiniteCheckpointError",
    "Restored",
    "ResumeMismatchError",
    "apply_training_state",
    "run_fingerprint",
    "training_state",
]

log = logging.getLogger(__name__)


class ResumeMismatchError(CheckpointError):
    """The checkpoint was written by a run with different run-defining settings or world size."""


class NonFiniteCheckpointError(CheckpointError):
    """The model or optimiser holds NaN/Inf values; no checkpoint was written."""


def _no_dist() -> bool:
    return not (dist.is_available() and dist.is_initialized())


def silence_single_process_warning() -> None:
    """Silence torch's "torch.distributed is disabled ... single process" UserWarning, printed by
    every dcp.save/async_save/load in a single process (our intent, so not news). A process-wide
    filter on that message only: ``dcp.async_save`` warns from its executor thread, after a
    ``warnings.catch_warnings`` block around the call would already have ended."""
    warnings.filterwarnings(
        "ignore",
        message=r"torch\.distributed is disabled, unavailable or uninitialized",
        category=UserWarning,
    )


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
        self._pending_folder = Path(run_dir)
        self._need_bytes = 0  # bytes of the last checkpoint written (for error messages)
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

    def load(self, path: Path, template: dict[str, Any]) -> Restored:
        """Read checkpoint ``path`` (collective). ``template``: a state in the saved layout, e.g.
        :func:`training_state` of the live model and optimiser; its DCP parts are filled in place.
        This rank's per-rank parts and the shared parts replace the template's others.

        Checks completeness, world size and fingerprint first.
        """
        path = Path(path)
        info = inspect_checkpoint(path)
        if not info.usable:
            raise CheckpointError(f"cannot load {path}: {info.problem}")
        self.check_compatible(info)
        dcp_state = {k: template[k] for k in DCP_KEYS}
        silence_single_process_warning()
        dcp.load(dcp_state, checkpoint_id=str(path), process_group=self.group, no_dist=_no_dist())
        mine = read_part(path / f"rank-{self.rank}.pt")
        if mine.get("rank") != self.rank:
            raise CheckpointError(
                f"{path / f'rank-{self.rank}.pt'} belongs to rank {mine.get('rank')}"
            )
        shared = read_part(path / "trainer.pt")
        self.last_saved = path
        marker = info.marker or {}
        log.info("resumed from %s (step %d)", path, info.step)
        state = {**shared, **mine["per_rank"], **dcp_state}
        return Restored(path, info.step, int(marker.get("epoch", 0)), state)

    # ---------------------------------------------------------------- save
    def warn_if_low_space(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, say: Callable[[str], None]
    ) -> None:
        """Before training (rank 0, when saving is on): ``say`` a warning when the run folder's
        file system has less free space than two checkpoints need (a later save would fail)."""
        if self.cfg.enabled and self.rank == 0:
            warn_if_low_space(self.run_dir, model, optimizer, say)

    def due(self, step: int) -> bool:
        """Whether a periodic save is due after optimiser step ``step`` (1-based count)."""
        every = self.cfg.every_steps
        return self.cfg.enabled and bool(every) and step > 0 and step % every == 0

    def save(
        self, step: int, state: Mapping[str, Any], *, epoch: int = 0, block: bool = False
    ) -> Path | None:
        """Write checkpoint ``step-<step>`` (collective). Returns its folder, None when disabled.

        ``state``: the layout of :func:`training_state` (see the module docstring); apart from the
        DCP parts it must hold only tensors, numbers, strings, lists, tuples and dicts. ``block``:
        wait until the checkpoint is complete even when saving asynchronously (the stop-request
        checkpoint). Raises :class:`NonFiniteCheckpointError` (nothing is written) when the model or
        optimiser state holds NaN/Inf.
        """
        dcp_state = {k: state[k] for k in DCP_KEYS}
        per_rank = {k: state[k] for k in PER_RANK_KEYS if k in state}
        shared = {k: v for k, v in state.items() if k not in DCP_KEYS and k not in PER_RANK_KEYS}
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
        if not all_finite(dcp_state):
            raise NonFiniteCheckpointError(
                f"refusing to write the checkpoint of step {step}: the model or optimiser state holds "
                f"NaN/Inf values. Last good checkpoint: {self.last_saved or 'none'}."
            )
        folder = step_dir(self.run_dir, step)
        if inspect_checkpoint(folder).usable:
            log.info("checkpoint %s already exists and is complete; not rewriting it", folder)
            self.last_saved = folder
            return folder
        self._need_bytes = tensor_bytes(dcp_state) + tensor_bytes(shared) + tensor_bytes(per_rank)
        try:
            self._write_folder(folder, step, dcp_state, shared, per_rank, epoch, block)
        except (Exception, dcp.CheckpointException) as error:  # DCP's is a BaseException
            failure = self._write_error(folder, error)
            if failure is error:
                raise
            raise failure from error
        return folder

    def _write_folder(
        self,
        folder: Path,
        step: int,
        state: dict[str, Any],
        shared: dict[str, Any],
        per_rank: dict[str, Any],
        epoch: int,
        block: bool,
    ) -> None:
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
        silence_single_process_warning()
        if self.cfg.asynchronous:
            future = dcp.async_save(
                state, checkpoint_id=str(folder), process_group=self.group, no_dist=_no_dist()
            )
            self._pending_folder = folder
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

    def _write_error(self, folder: Path, error: BaseException) -> BaseException:
        """What a failed save raises: an EnvironmentFailure (disk full, permission: exit 4) with
        the torn folder removed by rank 0 (its space comes back, the previous checkpoint stays the
        newest complete one), or any other error unchanged (a bug)."""
        failure = checkpoint_write_failure(folder, error, self._need_bytes, self.last_saved)
        if failure is None:
            return error
        if self.rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
        return failure

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
            failure = self._write_error(self._pending_folder, err)
            if failure is not err:
                raise failure from err
            raise CheckpointError(f"the asynchronous checkpoint save failed: {err}") from err

    def close(self) -> None:
        """Wait for the last save. Call on every rank before destroying the process group."""
        self.wait()
