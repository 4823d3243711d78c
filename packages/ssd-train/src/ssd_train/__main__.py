"""Command line: ``ssd-train``, ``python -m ssd_train``, ``torchrun ... -m ssd_train`` (see ``--help``).

Thin by design: resolve the settings, check the inputs that can be checked before anything is
built (run folder, backbone weights), then run the chosen mode (train, benchmark, eval) and close
everything in ``finally``. Exit codes: 0 done (also a run that ended without reaching its target, or
stopped on request), 2 bad settings or bad input (dataset, annotations, images, weights, a
checkpoint that does not fit, a run folder that cannot be written, a benchmark that asked for
CUDA graphs and ran without them: printed as one message, no traceback), 3 non-finite loss, 4 the
environment failed during the run (disk full, permission denied, a folder that vanished: one
message naming the path), 130 stopped by Ctrl-C (after writing a checkpoint; a second Ctrl-C
exits at once), 1 another error (a bug: a traceback).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ssd_train.resilience.environment import (
    ENVIRONMENT_ERRNOS,
    ENVIRONMENT_EXIT_CODE,
    EnvironmentFailure,
    first_failure_wins,
    write_failure,
)
from ssd_train.settings import Settings, SettingsLoadError, load_settings


class InputError(ValueError):
    """Bad input found by the checks in this module; the message says which file and what to do."""


def _input_errors() -> tuple[type[Exception], ...]:
    """Errors whose message already says which file or setting is wrong and what to do."""
    from ssd_data import DataError, LabelMapError
    from ssd_eval import GroundTruthError

    from ssd_train.benchmark import CudaGraphsSkippedError
    from ssd_train.checkpoint.manager import CheckpointError
    from ssd_train.checkpoint.weights import ExportError
    from ssd_train.dataset import DatasetClassesError
    from ssd_train.score_weights import WeightsError

    return (
        DataError,
        GroundTruthError,
        LabelMapError,
        CheckpointError,
        CudaGraphsSkippedError,
        DatasetClassesError,
        ExportError,
        WeightsError,
        InputError,
    )


_WRAPPED = re.compile(r"\ACaught (\w+) (?:in|on) [^\n]*\.\nOriginal Traceback", re.DOTALL)
_TORCH_HINT = re.compile(r"Weights only load failed.*", re.DOTALL)


def unwrap_worker_error(message: str) -> str:
    """The original message of an error re-raised from a loader worker thread or process.

    torch/torchdata re-raise worker errors as ``Caught <Type> in <where>.\\nOriginal Traceback
    (most recent call last): ... <module>.<Type>: <message>`` (``torch._utils.ExceptionWrapper``);
    this returns ``<message>``. Other messages come back unchanged, without torch's
    ``weights_only`` hint (our loaders never unpickle code, so the hint would mislead).
    """
    found = _WRAPPED.match(message)
    if found:
        # the last "<Type>: " line of the traceback starts the original message (chained errors
        # come first)
        name = found.group(1)
        lines = list(re.finditer(rf"(?:^|\n)(?:[\w.]+\.)?{name}: ", message))
        if lines:
            message = message[lines[-1].end() :]
    if not _TORCH_HINT.search(message):
        return message.strip()
    from ssd_core.torch_file import torch_load_problem

    return _TORCH_HINT.sub(torch_load_problem(message), message).strip()


def _wrapped_input_error(error: BaseException) -> bool:
    """A worker error re-raised as RuntimeError (its type could not be rebuilt) of an input kind."""
    found = _WRAPPED.match(str(error))
    return bool(found) and found.group(1).endswith(("DataError", "ImageError", "AnnotationError"))


def check_run_dir(run_dir: Path | None) -> None:
    """Fail fast when the run folder cannot be a writable folder (before anything is built).

    Raises:
        InputError: ``run_dir`` is a file, lies under a file, or its nearest existing folder is
            not writable.
    """
    if run_dir is None:
        return
    path = Path(run_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"run folder {path} is a file, not a folder: choose another --run-dir")
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(
            f"run folder {path} cannot be created: {parent} is a file, not a folder;"
            " choose another --run-dir"
        )
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            f"run folder {path} cannot be written: no write permission in {parent};"
            " choose another --run-dir"
        )


def check_backbone(settings: Settings) -> None:
    """Fail fast when the backbone weights the model would load are missing or unreadable.

    Raises:
        InputError: naming the file (and, for ``imagenet``, how to get it).
    """
    weights = settings.model.backbone_weights
    if weights is None or settings.mode == "eval":
        return
    from ssd_core.backbone import find_hub_backbone, load_backbone_state

    try:
        path = find_hub_backbone() if str(weights) == "imagenet" else Path(str(weights))
        if str(weights) != "imagenet":
            load_backbone_state(path)
    except (FileNotFoundError, ValueError) as error:
        raise InputError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssd-train`` script."""
    from ssd_train.report.console import remember_command

    args = list(sys.argv[1:] if argv is None else argv)
    remember_command(args)
    try:
        settings = load_settings(args)
    except SettingsLoadError as error:
        print(f"ssd-train: {error}", file=sys.stderr)
        return 2
    try:
        check_run_dir(settings.run_dir)
        check_backbone(settings)
        return _run(settings)
    except EnvironmentFailure as error:
        print(f"ssd-train: {error}", file=sys.stderr)
        return ENVIRONMENT_EXIT_CODE
    except _input_errors() as error:
        print(f"ssd-train: {unwrap_worker_error(str(error))}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if not _wrapped_input_error(error):
            raise
        print(f"ssd-train: {unwrap_worker_error(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the trainer's handler is installed (or without it)
        print("ssd-train: interrupted (Ctrl-C); no checkpoint was written for it", file=sys.stderr)
        return 130
    except (FileExistsError, NotADirectoryError, PermissionError) as error:
        run_dir = settings.run_dir or Path("runs")  # the default: runs/<UTC time>
        if not _under(error.filename, run_dir):
            return _environment_failure(error)
        print(
            f"ssd-train: cannot write the run folder {run_dir}: {error.strerror}"
            f" ({error.filename}); choose another --run-dir",
            file=sys.stderr,
        )
        return 2
    except OSError as error:
        return _environment_failure(error)


def _environment_failure(error: OSError) -> int:
    """Exit 4 with one line for an operating-system error of the environment (re-raised
    otherwise: a bug)."""
    if not isinstance(error.filename, str):  # the operating system named no file
        if error.errno not in ENVIRONMENT_ERRNOS:
            raise error
        print(f"ssd-train: the environment failed: {error.strerror or error}", file=sys.stderr)
        return ENVIRONMENT_EXIT_CODE
    failure = write_failure(Path(error.filename), error)
    if failure is None:
        raise error
    print(f"ssd-train: {failure}", file=sys.stderr)
    return ENVIRONMENT_EXIT_CODE


def _under(filename: object, folder: Path) -> bool:
    if not isinstance(filename, str | os.PathLike):
        return False
    try:
        file, base = Path(filename).resolve(), Path(folder).resolve()
    except OSError:
        return False
    return file == base or base in file.parents


def _run(settings: Settings) -> int:
    """Run the mode the settings ask for; the exit code of :func:`main`."""
    if settings.mode == "benchmark":
        from ssd_train.benchmark import run_benchmark

        run_benchmark(settings)
        return 0
    from ssd_train.dataset import check_annotations_before_start, prepare_dataset

    if settings.mode == "eval":
        from ssd_train.score_weights import check_weights_arg

        check_weights_arg(settings.weights)
    settings, synthetic = prepare_dataset(settings)
    if settings.mode == "eval":
        from ssd_train.score_weights import evaluate_weights

        evaluate_weights(settings)
        return 0
    try:
        check_annotations_before_start(settings, synthetic=synthetic)
    except ValueError as error:  # an explicit closed division the settings cannot pass
        raise InputError(str(error)) from None
    from ssd_train.resilience.nonfinite import NonFiniteLossError
    from ssd_train.resilience.preemption import INTERRUPT_EXIT_CODE
    from ssd_train.trainer import Trainer

    trainer = Trainer(settings, synthetic_data=synthetic)
    try:
        outcome = trainer.train()
    except NonFiniteLossError as error:
        print(f"ssd-train: {error}", file=sys.stderr)
        return 3
    finally:
        with first_failure_wins():
            trainer.close()
    return INTERRUPT_EXIT_CODE if outcome.reason == "ctrl_c" else 0


if __name__ == "__main__":
    sys.exit(main())
