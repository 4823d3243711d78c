"""Command line: ``ssd-train``, ``python -m ssd_train``, ``torchrun ... -m ssd_train`` (see ``--help``).

Thin by design: resolve the settings, then run the chosen mode (train, benchmark, eval) and close
everything in ``finally``. Exit codes: 0 done (also a run that ended without reaching its target, or
stopped on request), 2 bad settings or bad input (dataset, annotations, a checkpoint that does not
fit: printed as one message, no traceback), 3 non-finite loss, 1 another error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ssd_train.settings import Settings, SettingsLoadError, load_settings


def _input_errors() -> tuple[type[Exception], ...]:
    """Errors whose message already says which file or setting is wrong and what to do."""
    from ssd_data import DataError
    from ssd_eval import GroundTruthError, LabelMapError

    from ssd_train.checkpoint.manager import CheckpointError
    from ssd_train.default_job import DatasetClassesError

    return (DataError, GroundTruthError, LabelMapError, CheckpointError, DatasetClassesError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssd-train`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(args)
    except SettingsLoadError as error:
        print(f"ssd-train: {error}", file=sys.stderr)
        return 2
    try:
        return _run(settings)
    except _input_errors() as error:
        print(f"ssd-train: {error}", file=sys.stderr)
        return 2


def _run(settings: Settings) -> int:
    """Run the mode the settings ask for; the exit code of :func:`main`."""
    if settings.mode == "benchmark":
        from ssd_train.benchmark import run_benchmark

        run_benchmark(settings)
        return 0
    from ssd_train.default_job import prepare_dataset

    settings, synthetic = prepare_dataset(settings)
    if settings.mode == "eval":
        from ssd_train.eval_mode import evaluate_weights

        evaluate_weights(settings)
        return 0
    from ssd_train.trainer import NonFiniteLossError, Trainer

    trainer = Trainer(settings, synthetic_data=synthetic)
    try:
        trainer.train()
    except NonFiniteLossError as error:
        print(f"ssd-train: {error}", file=sys.stderr)
        return 3
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
