"""Console lines of a run's start and end: device and precision, the final summary, the command
that continues the run; and the one library notice the console drops (torch's "No CUDA runtime"
when compiling on a CPU). Nothing here imports torch at import time: a settings error is answered
before torch loads.

The continue command is the run's own command line (``remember_command`` keeps the argv that
``ssd-train`` parsed; default ``sys.argv[1:]``) with its ``SSD_*`` environment settings in front,
``--run-dir`` set to the run folder, ``--checkpoint.resume`` back at ``auto`` (the latest
complete checkpoint in the folder), ``--schedule.max-steps`` dropped when that limit ended the run
and ``--schedule.max-epochs`` raised when the epochs ran out. Under torchrun it starts with the
same launcher shape (``uv run torchrun --nproc-per-node N -m ssd_train``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_COMMAND: list[str] | None = None

#: Options the continue command replaces (kebab and snake spellings are both accepted).
_RUN_DIR, _RESUME, _MAX_STEPS, _MAX_EPOCHS = (
    "run-dir",
    "checkpoint.resume",
    "schedule.max-steps",
    "schedule.max-epochs",
)


CPP_EXTENSION_LOGGER = "torch.utils.cpp_extension"
_NO_CUDA_RUNTIME = "No CUDA runtime is found"


class _DropNoCudaRuntime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NO_CUDA_RUNTIME)


def quiet_cpu_compile_notice() -> None:
    """Drop torch's "No CUDA runtime is found, using CUDA_HOME=..." warning, which compiling on
    a CPU prints when a CUDA toolkit is installed (inductor imports ``torch.utils.cpp_extension``):
    expected there, so not news. Only that message of that logger is dropped; its other warnings
    and errors still show. Idempotent."""
    logger = logging.getLogger(CPP_EXTENSION_LOGGER)
    if not any(isinstance(f, _DropNoCudaRuntime) for f in logger.filters):
        logger.addFilter(_DropNoCudaRuntime())


def remember_command(argv: Sequence[str]) -> None:
    """Keep the command-line arguments of this run (``ssd-train`` calls it before parsing)."""
    global _COMMAND
    _COMMAND = list(argv)


def device_precision_line(
    device: torch.device | str,
    precision: str,
    autocast_dtype: torch.dtype | None,
    cpu_fast_bf16: bool,
) -> str:
    """ "device cpu, precision fp32 (this CPU has no bf16 instructions; --precision bf16 forces it)".

    Args:
        device: the training device.
        precision: the ``precision`` setting (auto, bf16, fp32).
        autocast_dtype: the autocast dtype chosen (None = fp32), from ``autocast_dtype_for``.
        cpu_fast_bf16: ``components.cpu_has_fast_bf16()``.
    """
    import torch  # here: a settings error or --help does not wait for torch to import

    device = torch.device(device)
    chosen = "bf16" if autocast_dtype == torch.bfloat16 else "fp32"
    name = str(device)
    if device.type == "cuda":
        with contextlib.suppress(Exception):  # no CUDA driver (tests): the bare name is enough
            name = f"{device} ({torch.cuda.get_device_name(device)})"
    if precision != "auto":
        why = f"--precision {precision}"
    elif device.type == "cuda":
        why = "bf16 autocast on CUDA; --precision fp32 turns it off"
    elif chosen == "bf16":
        why = "this CPU has bf16 instructions; --precision fp32 turns them off"
    elif device.type == "cpu" and not cpu_fast_bf16:
        why = "this CPU has no bf16 instructions, where bf16 would be slower; --precision bf16 forces it"
    else:
        why = "--precision auto"
    return f"device {name}, precision {chosen} ({why})"


def _option(arg: str) -> str:
    return arg[2:].partition("=")[0].replace("_", "-")


def _without(args: list[str], names: set[str]) -> tuple[list[str], bool]:
    """``args`` without the options ``names`` (``--x v`` and ``--x=v``); whether any was there."""
    out: list[str] = []
    found = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and _option(arg) in names:
            found = True
            i += 1 if "=" in arg else 2
            continue
        out.append(arg)
        i += 1
    return out, found


def _launcher() -> str:
    from ssd_train.distributed import launched_world_size

    world = launched_world_size()
    if world <= 1:
        return "uv run ssd-train"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)) or world)
    nodes = max(1, world // max(local, 1))
    nnodes = f"--nnodes {nodes} " if nodes > 1 else ""
    return f"uv run torchrun {nnodes}--nproc-per-node {local} -m ssd_train"


def continue_command(
    run_dir: Path | str,
    reason: str,
    *,
    max_epochs: int | None = None,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The shell command that continues the run in ``run_dir`` after it ended for ``reason``."""
    args = list(argv if argv is not None else _COMMAND if _COMMAND is not None else sys.argv[1:])
    env = dict(os.environ if environ is None else environ)
    drop = {_RUN_DIR, _RESUME}
    if reason == "max_steps":
        drop.add(_MAX_STEPS)
    more_epochs = reason == "max_epochs" and max_epochs is not None
    if more_epochs:
        drop.add(_MAX_EPOCHS)
    _, had_resume = _without(args, {_RESUME})
    args, _ = _without(args, drop)
    skip_env = {"SSD_RUN_DIR", "SSD_CHECKPOINT__RESUME"}
    if reason == "max_steps":
        skip_env.add("SSD_SCHEDULE__MAX_STEPS")
    if more_epochs:
        skip_env.add("SSD_SCHEDULE__MAX_EPOCHS")
    prefix = [
        f"{k}={shlex.quote(v)}"
        for k, v in sorted(env.items())
        if k.startswith("SSD_") and k not in skip_env
    ]
    tail = ["--run-dir", str(run_dir)]
    if had_resume or "SSD_CHECKPOINT__RESUME" in env:
        tail += ["--checkpoint.resume", "auto"]
    if reason == "max_steps" and "SSD_SCHEDULE__MAX_STEPS" in env:
        tail += ["--schedule.max-steps", "None"]
    if more_epochs:
        assert max_epochs is not None
        tail += ["--schedule.max-epochs", str(2 * max_epochs)]
    words = [*prefix, _launcher(), *(shlex.quote(a) for a in [*args, *tail])]
    return " ".join(words)


def has_checkpoint(run_dir: Path | str) -> bool:
    """Whether ``run_dir/checkpoints`` holds a complete-looking ``step-N`` folder."""
    folder = Path(run_dir) / "checkpoints"
    return folder.is_dir() and any(p.is_dir() for p in folder.glob("step-*"))


def _ending(status: str, reason: str, best_map: float | None, target_map: float | None) -> str:
    best = "no evaluation yet" if best_map is None else f"best mAP {best_map:.4f}"
    target = "" if target_map is None or best_map is None else f" (target {target_map})"
    if status == "success":
        return f"target met: mAP {best_map if best_map is None else f'{best_map:.4f}'}{target}"
    if reason == "max_steps":
        return f"stopped at schedule.max_steps; {best}{target}"
    if reason == "max_epochs":
        if best_map is None:
            return f"all epochs done, {best}"
        return f"target missed: {best}{target}"
    if reason == "stop_requested":
        return f"stopped on request; {best}"
    if reason == "ctrl_c":
        return f"stopped by Ctrl-C; {best}"
    if reason == "error":
        return f"failed (the error follows); {best}"
    return f"interrupted ({reason}); {best}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def final_lines(
    *,
    status: str,
    reason: str,
    epochs: int,
    steps: int,
    best_map: float | None,
    run_dir: Path | str,
    target_map: float | None = None,
    max_epochs: int | None = None,
    data_summary: str | None = None,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The summary printed at the end of a run: [data counts,] how it ended, [how to continue].

    The last line is the continue command for every ending but a met target.
    """
    lines = [data_summary] if data_summary else []
    lines.append(
        f"run {status} ({reason}) - {_ending(status, reason, best_map, target_map)};"
        f" {_count(epochs, 'epoch')}, {_count(steps, 'step')}; run folder: {run_dir}"
    )
    if status == "success":
        return lines
    command = continue_command(run_dir, reason, max_epochs=max_epochs, argv=argv, environ=environ)
    if has_checkpoint(run_dir):
        lines.append(f"continue this run from its latest checkpoint with:\n  {command}")
    else:
        lines.append(
            f"no checkpoint was saved, so nothing to resume; start it again in the same folder with:"
            f"\n  {command}"
        )
    return lines


def data_summary_line(train: Mapping[str, int] | None, val: Mapping[str, int] | None) -> str:
    """One line of the loaders' counters (``TrainLoader.stats()``, ``EvalLoader.stats()``)."""
    parts: list[str] = []
    if train is not None:
        parts.append(
            f"training data: {train.get('images', 0)} images read,"
            f" {train.get('bad_image', 0)} unreadable skipped,"
            f" {train.get('size_mismatch', 0)} size mismatches,"
            f" {train.get('dropped_boxes', 0)} boxes beyond data.max_boxes dropped,"
            f" {train.get('index_dropped_degenerate_boxes', 0)} degenerate boxes dropped"
        )
    if val is not None:
        parts.append(
            f"validation: {val.get('bad_image', 0)} unreadable left out,"
            f" {val.get('size_mismatch', 0)} size mismatches"
        )
    return "; ".join(parts)
