"""On-disk layout of checkpoints: step-N folders, the completion marker, torn-folder detection.

A checkpoint is the folder ``<run dir>/checkpoints/step-<N>/`` holding

- the torch.distributed.checkpoint files (``.metadata``, ``__<rank>_0.distcp``): model and
  optimiser, sharded as the model is (DDP: rank 0's copy; FSDP2: every rank's shards);
- ``rank-<k>.pt`` per rank: that rank's RNG states and data-loader position;
- ``trainer.pt`` (rank 0): step, epoch, LR schedule, pending evaluations, ...;
- ``settings.json`` (rank 0): the resolved settings of the segment that wrote it;
- ``COMPLETE`` (rank 0, written last, after every rank finished): JSON with the step, epoch,
  world size, run fingerprint and the byte size of every other file.

A folder without ``COMPLETE``, or whose files do not have the sizes it lists (a truncated file),
is torn and never resumed from.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ssd_core.torch_file import TorchFileError, load_tensor_file

from ssd_train.resilience.environment import write_failure

CHECKPOINTS_DIR = "checkpoints"
MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or resumed from; the message says why and what to do."""


def read_part(path: Path) -> Any:
    """A checkpoint's ``rank-K.pt`` / ``trainer.pt`` (weights_only); damaged: CheckpointError."""
    try:
        return load_tensor_file(
            path,
            what="a readable checkpoint file",
            instead="another checkpoint with checkpoint.resume=PATH (or remove the damaged folder)",
        )
    except TorchFileError as error:
        raise CheckpointError(str(error)) from None


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint folder and what its marker says (``marker`` is None for a torn folder)."""

    path: Path
    step: int
    marker: dict[str, Any] | None
    problem: str | None  # why it is not usable, None when it is

    @property
    def usable(self) -> bool:
        return self.problem is None


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def step_dir(run_dir: Path, step: int) -> Path:
    return checkpoints_dir(run_dir) / f"step-{step}"


def atomic_write_bytes(path: Path, data: bytes | memoryview, *, what: str = "") -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename:
    ``path`` is either the old file or the whole new one, never a half file.

    Raises:
        EnvironmentFailure: the write failed (disk full, permission, a missing folder), naming
            ``path``, the error and the bytes needed; the temporary file is removed.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        failure = write_failure(path, error, need_bytes=len(data), what=what)
        if failure is None:
            raise
        raise failure from error


def atomic_torch_save(obj: Any, path: Path, *, what: str = "") -> None:
    """``torch.save`` of ``obj`` to ``path`` as :func:`atomic_write_bytes` (serialised in memory
    first, so that a full disk reports the operating system's error, not the zip writer's)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer(), what=what)


def file_sizes(folder: Path) -> dict[str, int]:
    """Byte size of every regular file in ``folder`` except the marker and temporary files."""
    return {
        p.name: p.stat().st_size
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MARKER and ".tmp-" not in p.name
    }


def write_marker(folder: Path, info: Mapping[str, Any]) -> None:
    """Write ``COMPLETE`` last: the listed file sizes let a reader detect truncated files."""
    payload = {**info, "files": file_sizes(folder), "written_at": time.time()}
    atomic_write_bytes(folder / MARKER, json.dumps(payload, indent=1, sort_keys=True).encode())


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """Read a checkpoint folder's marker and check that every listed file has its listed size."""
    path = Path(path)
    match = _STEP_DIR.match(path.name)
    step = int(match.group(1)) if match else -1
    marker_path = path / MARKER
    if not marker_path.is_file():
        return CheckpointInfo(path, step, None, f"no {MARKER} marker (the save did not finish)")
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError) as e:
        return CheckpointInfo(path, step, None, f"unreadable {MARKER} marker ({e})")
    for name, size in marker.get("files", {}).items():
        f = path / name
        if not f.is_file():
            return CheckpointInfo(path, step, marker, f"file {name} is missing")
        if f.stat().st_size != size:
            return CheckpointInfo(
                path,
                step,
                marker,
                f"file {name} has {f.stat().st_size} bytes, the marker lists {size}",
            )
    if not any(
        n.endswith(".distcp") for n in marker.get("files", {})
    ) or ".metadata" not in marker.get("files", {}):
        return CheckpointInfo(path, step, marker, "no torch.distributed.checkpoint files listed")
    return CheckpointInfo(path, int(marker.get("step", step)), marker, None)


def list_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """Every step-N folder of the run, oldest first, with whether it is usable."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    folders.sort(key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]
    return [inspect_checkpoint(p) for p in folders]


def latest_complete(run_dir: Path) -> tuple[CheckpointInfo | None, list[CheckpointInfo]]:
    """The newest usable checkpoint and the newer torn ones that were skipped for it."""
    skipped: list[CheckpointInfo] = []
    for info in reversed(list_checkpoints(run_dir)):
        if info.usable:
            return info, skipped
        skipped.append(info)
    return None, skipped


def prune(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest usable checkpoints, and torn folders older than those.

    Torn folders newer than the newest usable one are left alone (a save may be in progress).
    Returns the deleted folders. Call on one rank only.
    """
    infos = list_checkpoints(run_dir)
    usable = [i for i in infos if i.usable]
    if not usable:
        return []
    keep_paths = {i.path for i in usable[-keep:]}
    newest = usable[-1].step
    deleted = []
    for info in infos:
        if info.path in keep_paths or (not info.usable and info.step > newest):
            continue
        shutil.rmtree(info.path, ignore_errors=True)
        deleted.append(info.path)
    return deleted


_SAFE_LEAVES = (str, int, float, bool, type(None), torch.dtype, torch.device)


def find_unsafe_value(obj: Any, where: str = "") -> str | None:
    """Path and type of the first value that torch.load(weights_only=True) could not read back.

    Exact types only: a ``str`` subclass such as ``torch.__version__`` is refused too.
    """
    if type(obj) in _SAFE_LEAVES or isinstance(obj, torch.Tensor):
        return None
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if not isinstance(key, str | int):
                return f"{where}[{key!r}] (key of type {type(key).__name__})"
            found = find_unsafe_value(value, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            found = find_unsafe_value(value, f"{where}[{i}]")
            if found:
                return found
        return None
    return f"{where or '<root>'} (a {type(obj).__module__}.{type(obj).__name__})"
