"""``--mode eval``: score a checkpoint folder or exported weights on the validation set, print the COCO table.

``ssd-train --mode eval --weights runs/X/best.pt --data.root /coco`` (or ``--weights
runs/X/checkpoints/step-N``). Runs on every rank under torchrun (each infers its shard); rank 0
scores synchronously and prints the 12-line COCO summary and the per-category table (weakest first).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ssd_core import COCO_NUM_CLASSES, build_detector
from ssd_eval import EvalResult, format_per_class_table, format_summary
from torch import nn

from ssd_train.checkpoint.weights import INSTEAD, ExportError
from ssd_train.components import autocast_dtype_for
from ssd_train.dataset import DatasetClassesError
from ssd_train.distributed import destroy, init_distributed
from ssd_train.settings import Settings
from ssd_train.validation import Evaluation


class WeightsError(ValueError):
    """``--weights`` is missing or not something ``--mode eval`` can load; the message says what to pass."""


_WHAT = f"pass {INSTEAD}"


def check_weights_arg(weights: Path | None) -> Path:
    """Fail fast: ``--weights`` is given and names an existing file or folder.

    Raises:
        WeightsError: naming the path and what to pass instead.
    """
    if weights is None:
        raise WeightsError(f"--mode eval needs --weights: {_WHAT}")
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(f"--weights {path} does not exist: {_WHAT}")
    return path


def _read_exported(weights: Path):  # type: ignore[no-untyped-def]
    """``read_exported`` with its one-line message (``ssd_core.torch_file``) as a WeightsError."""
    from ssd_train.checkpoint.weights import read_exported

    try:
        return read_exported(weights)
    except ExportError as error:
        raise WeightsError(f"--weights {error}") from None


def load_weights_into(model: nn.Module, weights: Path) -> str:
    """Load exported weights (``best.pt``/``last.pt``) or a DCP checkpoint folder into ``model``.

    Returns a short description of what was loaded.
    """
    weights = Path(weights)
    if weights.is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            set_model_state_dict,
        )

        from ssd_train.checkpoint.files import inspect_checkpoint
        from ssd_train.checkpoint.manager import silence_single_process_warning

        info = inspect_checkpoint(weights)
        if not info.usable:
            raise WeightsError(f"cannot evaluate {weights}: {info.problem}; {_WHAT}")
        state = {"model": get_model_state_dict(model)}
        silence_single_process_warning()
        try:
            dcp.load(state, checkpoint_id=str(weights))
        except Exception as error:  # DCP raises several types for foreign or partial folders
            raise WeightsError(
                f"cannot load the model from checkpoint {weights} ({type(error).__name__}); {_WHAT}"
            ) from None
        set_model_state_dict(model, state["model"])
        return f"checkpoint {weights} (step {info.step})"
    exported = _read_exported(weights)
    try:
        model.load_state_dict(exported.state_dict)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise WeightsError(f"{weights} does not fit the SSD300 model: {first}") from None
    meta = exported.metadata
    return f"weights {weights} (epoch {meta.get('epoch')}, step {meta.get('weights_step', meta.get('step'))})"


def weights_num_classes(weights: Path, default: int) -> int:
    """C of the model stored in ``weights`` (exported metadata, or the checkpoint's settings.json)."""
    weights = Path(weights)
    if weights.is_dir():
        saved = weights / "settings.json"
        if saved.is_file():
            return int(json.loads(saved.read_text()).get("model", {}).get("num_classes", default))
        return default
    return int(_read_exported(weights).metadata.get("num_classes", default))


def evaluation_report(what: str, images: int, result: EvalResult) -> str:
    """What ``--mode eval`` prints: a title line, the 12-line COCO summary and, when the result
    has per-category results, a blank line and the per-category table (weakest first, as
    ``ssd-eval`` prints it). No trailing newline."""
    lines = [f"COCO box evaluation of {what} on {images} images:", format_summary(result.stats)]
    if result.per_class is not None:
        lines += ["", format_per_class_table(result.per_class)]
    return "\n".join(lines)


def evaluate_weights(settings: Settings) -> EvalResult:
    """Evaluate ``settings.weights`` on ``settings.data``'s validation set; returns the result (all ranks)."""
    assert settings.weights is not None  # check_weights_arg ran first (ssd_train.__main__)
    ctx = init_distributed(settings.distributed, settings.device)
    evaluation = None
    try:
        dataset_classes = settings.model.num_classes  # from the val json (prepare_dataset)
        num_classes = weights_num_classes(settings.weights, dataset_classes or COCO_NUM_CLASSES)
        if dataset_classes is not None and num_classes != dataset_classes:
            raise DatasetClassesError(
                f"{settings.weights} holds a model of {num_classes} classes but"
                f" {settings.data.val_annotations} lists {dataset_classes - 1} categories"
                f" (C = {dataset_classes}): evaluate it on the dataset it was trained for"
            )
        model_cfg = settings.model.model_copy(
            update={"backbone_weights": None, "num_classes": num_classes}
        )
        detector = build_detector(model_cfg)
        memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        model = detector.model.to(device=ctx.device, memory_format=memory_format)
        what = load_weights_into(model, settings.weights)
        autocast = autocast_dtype_for(settings.precision, ctx.device)
        evaluation = Evaluation.for_run(settings, ctx, detector.postprocessor, autocast)
        result = evaluation.run(model, 0, asynchronous=False)
        assert result is not None
        if ctx.is_main:
            print(evaluation_report(what, evaluation.num_samples, result), flush=True)
        return result
    finally:
        if evaluation is not None:
            evaluation.close()
        destroy()
