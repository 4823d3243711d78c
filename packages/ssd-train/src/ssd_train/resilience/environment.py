"""Write failures of the environment (disk full, permission denied, a vanished folder): exit 4.

Every file the trainer and ``ssd-predict`` write (checkpoints, ``best.pt``/``last.pt``,
``metrics.jsonl``, ``mlperf.log``, predictions, exports) turns an operating-system write error into
one :class:`EnvironmentFailure`: the path, the error in words (``No space left on device``,
``Permission denied``, ...) and, for checkpoints, how many bytes a checkpoint needs and how many
are free. The command line prints its message and exits 4 (interfaces.md, "Exit codes"), so a
script can tell a failed environment from bad input (2) and from a bug (1).

Some writers lose the operating system's error on the way (torch's zip writer reports a full
disk as ``RuntimeError: ... unexpected pos``; torch.distributed.checkpoint wraps each rank's
error in a ``CheckpointException``): :func:`write_failure` looks through the exception's causes
and, when no ``OSError`` is found, calls a write that failed with less free space than it needed
a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where used: the command line imports this module early
    import torch

ENVIRONMENT_EXIT_CODE = 4
"""Exit status of a run whose environment failed (interfaces.md, "Exit codes")."""

ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # no space left on device
        errno.EDQUOT,  # disk quota exceeded
        errno.EFBIG,  # file too large
        errno.EIO,  # input/output error
        errno.EROFS,  # read-only file system
        errno.EACCES,  # permission denied
        errno.EPERM,  # operation not permitted
        errno.ENOENT,  # a folder vanished (deleted, unmounted)
        errno.ENOTDIR,  # a folder became a file
        errno.ENAMETOOLONG,
    }
)


class EnvironmentFailure(RuntimeError):
    """A write failed because of the environment; the message names the path, the error and
    what to do. ``path``: the file or folder; ``errno``: the operating system's code (or None)."""

    def __init__(self, message: str, path: Path | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = code


def human_bytes(n: float) -> str:
    """``n`` bytes as '97.1 MB' (decimal units, as ``df -H``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(path: Path) -> int | None:
    """Free bytes (for this user) on the file system that holds ``path`` or its nearest
    existing parent; None when it cannot be told."""
    probe = Path(path).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and the per-rank errors of a DCP CheckpointException."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
        failures = getattr(e, "failures", None)  # torch.distributed.checkpoint CheckpointException
        if isinstance(failures, Mapping):
            for value in failures.values():
                todo += [v for v in _flatten(value) if isinstance(v, BaseException)]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, tuple | list):
        return [x for v in value for x in _flatten(v)]
    exc = getattr(value, "exc", None)  # torch's _WrappedException
    return [value] if exc is None else [exc]


def find_os_error(error: BaseException) -> OSError | None:
    """The first operating-system error of :data:`ENVIRONMENT_ERRNOS` behind ``error``."""
    for e in _causes(error):
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            return e
        if isinstance(e, EnvironmentFailure):
            return OSError(e.errno, str(e))
    return None


def _looks_full(error: BaseException) -> bool:
    return any("No space left on device" in str(e) for e in _causes(error))


def write_failure(
    path: Path,
    error: BaseException,
    *,
    need_bytes: int | None = None,
    what: str = "",
    hint: str = "",
) -> EnvironmentFailure | None:
    """The :class:`EnvironmentFailure` for ``error`` raised while writing ``path``, or None when
    the error is not the environment's (then it is a bug: re-raise it).

    ``need_bytes``: what the write needs in all (printed with the free space; with it, a write
    that failed without an operating-system error while less was free counts as a full disk).
    ``what``: words before the path ('checkpoint', 'metrics file'); ``hint``: the last sentence.
    """
    if isinstance(error, EnvironmentFailure):
        return error
    path = Path(path)
    free = free_bytes(path)
    os_error = find_os_error(error)
    if os_error is not None:
        code, reason = os_error.errno, os_error.strerror or str(os_error)
        where = os_error.filename
    elif _looks_full(error) or (need_bytes is not None and free is not None and free < need_bytes):
        code, reason, where = errno.ENOSPC, os.strerror(errno.ENOSPC), None
    else:
        return None
    target = f"{what} {path}" if what else str(path)
    detail = f" ({where})" if where and Path(where) != path else ""
    sizes = ""
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or need_bytes is not None:
        parts = [f"it needs about {human_bytes(need_bytes)}"] if need_bytes else []
        if free is not None:
            parts.append(f"{human_bytes(free)} free on that file system")
        sizes = f"; {', '.join(parts)}" if parts else ""
    todo = {
        errno.EACCES: "give the user write permission there or choose another folder",
        errno.EPERM: "give the user write permission there or choose another folder",
        errno.EROFS: "choose a folder on a writable file system",
        errno.ENOENT: "a folder on the way no longer exists: recreate it or choose another",
        errno.ENOTDIR: "a folder on the way is a file: remove it or choose another folder",
        errno.EIO: "check the disk and its file system, or choose another folder",
        errno.ENAMETOOLONG: "choose a shorter path",
    }.get(code, "free space there or choose another folder")
    message = f"cannot write {target}: {reason}{detail}{sizes}. {todo[0].upper()}{todo[1:]}"
    if hint:
        message += f"; {hint}"
    return EnvironmentFailure(message + ".", path, code)


def checkpoint_write_failure(
    folder: Path, error: BaseException, need_bytes: int, last_saved: Path | None
) -> EnvironmentFailure | None:
    """:func:`write_failure` of checkpoint ``folder`` (``need_bytes``: its size), saying which
    complete checkpoint a rerun resumes from."""
    resume = (
        f"rerun the same command to resume from {last_saved}"
        if last_saved is not None
        else "no complete checkpoint exists yet"
    )
    return write_failure(
        folder,
        error,
        need_bytes=need_bytes or None,
        what="checkpoint",
        hint=f"{resume} (the torn {folder.name} is removed and never resumed from)",
    )


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a nested dict/list/tuple (a DTensor counts its global size)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Estimated bytes of one checkpoint: the model's state (parameters and buffers) plus the
    optimiser's state; before the first step (the state does not exist yet) one buffer per
    parameter for an optimiser with momentum (SGD), two for Adam-like ones."""
    model_bytes = tensor_bytes(dict(model.state_dict()))
    state = optimizer.state_dict().get("state", {})
    if state:
        return model_bytes + tensor_bytes(state)
    params = sum(p.numel() * p.element_size() for g in optimizer.param_groups for p in g["params"])
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    per_param = 2 if "betas" in group else 1 if group.get("momentum", 0) else 0
    return model_bytes + per_param * params


def low_space_warning(run_dir: Path, one_checkpoint: int, count: int = 2) -> str | None:
    """A warning when the run folder's file system has less free space than ``count``
    checkpoints of ``one_checkpoint`` bytes need; None when there is enough (or it is unknown)."""
    free = free_bytes(run_dir)
    need = count * one_checkpoint
    if free is None or free >= need:
        return None
    return (
        f"warning: {human_bytes(free)} free on the file system of the run folder {run_dir},"
        f" less than {count} checkpoints need ({count} x {human_bytes(one_checkpoint)}): a"
        " checkpoint may fail with 'No space left on device' (exit 4). Free space or choose"
        " another --run-dir"
    )


def warn_if_low_space(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    say: Callable[[str], None],
) -> None:
    """Call ``say`` with :func:`low_space_warning` when two checkpoints of ``model`` and
    ``optimizer`` do not fit in the free space of ``run_dir``'s file system."""
    warning = low_space_warning(run_dir, checkpoint_bytes(model, optimizer))
    if warning:
        say(warning)


@contextlib.contextmanager
def first_failure_wins() -> Iterator[None]:
    """For clean-up in a ``finally`` block: when an error is already on its way out (e.g. a full
    disk while checkpointing), an :class:`EnvironmentFailure` of the clean-up (writing the last log
    lines to the same full disk) is dropped so that the first error is the one reported."""
    failing = sys.exc_info()[1] is not None
    try:
        yield
    except EnvironmentFailure:
        if not failing:
            raise
