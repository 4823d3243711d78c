"""Exported weights: ``best.pt`` / ``last.pt``, model-only state dict plus metadata.

File format (``torch.save`` of a dict; read with ``torch.load(path, weights_only=True)``)::

    {"format": "ssd-mlperf-weights/1",
     "model": {name: tensor, ...},        # SSD300 state dict, CPU, no DDP/compile prefixes
     "metadata": {"num_classes": 81, "map": 0.231, "epoch": 40, "step": 36960,
                  "date": "2026-...Z", "versions": {"torch": ..., ...}, "settings": {...}, ...}}

:func:`export_weights` writes one (collective under FSDP2: every rank calls it, rank 0 writes);
:func:`read_exported` reads one back; :func:`load_exported` rebuilds an ``ssd_core.model.SSD300``
from it. :class:`WeightsExporter` is the trainer's part that writes them (best by mAP, last at
the end).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ssd_core import COCO_NUM_CLASSES
from ssd_core.torch_file import TorchFileError, load_tensor_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from ssd_train.checkpoint.files import atomic_torch_save, find_unsafe_value
from ssd_train.resilience.environment import write_failure

FORMAT = "ssd-mlperf-weights/1"
_PREFIXES = ("module.", "_orig_mod.")


WHAT = "an ssd-mlperf weights file"
INSTEAD = (
    "an exported weights file (best.pt / last.pt of a run folder) or a checkpoint folder"
    " (<run dir>/checkpoints/step-N)"
)


class ExportError(ValueError):
    """A weights file cannot be written or read; the message names the file and the problem."""


@dataclass(frozen=True)
class ExportedWeights:
    """Contents of an exported weights file."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]


def package_versions() -> dict[str, str]:
    """Versions recorded with exported weights."""
    out = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for name in ("torchvision", "ssd-core", "ssd-data", "ssd-eval", "ssd-train"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on CPU (gathers FSDP2 shards; collective when distributed)."""
    distributed = dist.is_available() and dist.is_initialized()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    sd = get_model_state_dict(model, options=options) if distributed else model.state_dict()
    return {_strip(k): v.detach().to("cpu").clone() for k, v in sd.items()}


def export_weights(model: nn.Module, path: Path, metadata: Mapping[str, Any]) -> Path | None:
    """Write ``model``'s weights and ``metadata`` to ``path`` (atomically). Every rank calls it;
    rank 0 writes and gets the path back, other ranks get None.

    ``metadata`` must hold only numbers, strings, lists and dicts (JSON-like); ``date``,
    ``versions`` and ``num_classes`` are added when missing.
    """
    sd = full_model_state_dict(model)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank != 0:
        return None
    meta = dict(metadata)
    meta.setdefault("date", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    meta.setdefault("versions", package_versions())
    bare = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    if getattr(bare, "num_classes", None) is not None:
        meta.setdefault("num_classes", int(bare.num_classes))
    bad = find_unsafe_value(meta, "metadata")
    if bad:
        raise ExportError(f"cannot export {path}: {bad} is not a number, string, list or dict")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        failure = write_failure(path, error, what="weights file")
        if failure is None:
            raise
        raise failure from error
    atomic_torch_save({"format": FORMAT, "model": sd, "metadata": meta}, path, what="weights file")
    return path


def read_exported(path: Path | str, map_location: str | torch.device = "cpu") -> ExportedWeights:
    """Read an exported weights file with ``torch.load(weights_only=True)``; checks its format."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no weights file at {path}")
    try:
        obj = load_tensor_file(path, what=WHAT, instead=INSTEAD, map_location=map_location)
    except TorchFileError as e:
        raise ExportError(str(e)) from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ExportError(f"{path} is not {WHAT} (format {FORMAT!r}); pass {INSTEAD}")
    return ExportedWeights(obj["model"], obj["metadata"])


def load_exported(
    path: Path | str, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """An ``ssd_core.model.SSD300`` holding the exported weights (eval mode) and the metadata."""
    from ssd_core import SSD300

    weights = read_exported(path, map_location)
    num_classes = int(weights.metadata.get("num_classes", COCO_NUM_CLASSES))
    model = SSD300(num_classes=num_classes, backbone_weights=None)
    model.load_state_dict(weights.state_dict)
    return model.to(map_location).eval(), weights.metadata


class WeightsExporter:
    """``best.pt`` whenever an evaluation improves mAP, ``last.pt`` at the end of a run.

    With asynchronous scoring the result arrives after training moved on; the trainer calls
    :meth:`on_evaluation_start` when an evaluation starts, which keeps a CPU copy of the evaluated
    weights to export with their result (``weights_step`` in the metadata says which step they are
    from). Every rank calls every method (gathering FSDP2 shards is collective); rank 0 writes.
    """

    def __init__(self, run_dir: Path, settings: Mapping[str, Any], rank: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.settings = dict(settings)
        self.rank = rank
        self.best_map = float("-inf")
        self._snapshots: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}
        self.categories: list[dict[str, Any]] | None = None  # the dataset's, for class names

    def on_evaluation_start(self, model: nn.Module, step: int, epochs_done: int) -> None:
        """Keep a CPU copy of the weights being evaluated after ``epochs_done`` epochs."""
        self._snapshots[epochs_done] = (step, full_model_state_dict(model))

    def on_evaluation(self, model: nn.Module, result: Any, *, step: int, epoch: int) -> Path | None:
        """Export ``best.pt`` if ``result.map`` (an ``ssd_eval.EvalResult``) is the best so far.

        ``step``/``epoch``: the trainer's position now; ``result.epoch``: the epochs evaluated.
        """
        eval_epoch = int(result.epoch) if result.epoch is not None else epoch
        snapshot = self._snapshots.pop(eval_epoch, None)
        if result.map <= self.best_map:
            return None
        self.best_map = float(result.map)
        meta = {
            "settings": self.settings,
            "step": step,
            "epoch": epoch,
            "map": float(result.map),
            "eval_epoch": eval_epoch,
            "stats": list(result.stats),
            **self._categories(),
        }
        path = self.run_dir / "best.pt"
        if snapshot is None:
            meta["weights_step"] = step
            return export_weights(model, path, meta)
        meta["weights_step"] = snapshot[0]
        if self.rank != 0:
            return None
        meta["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        meta["versions"] = package_versions()
        meta["num_classes"] = self.settings.get("model", {}).get("num_classes", COCO_NUM_CLASSES)
        atomic_torch_save(
            {"format": FORMAT, "model": snapshot[1], "metadata": meta}, path, what="weights file"
        )
        return path

    def on_run_end(
        self, model: nn.Module, *, step: int, epoch: int, last_map: float | None, best_map: float
    ) -> Path | None:
        """Export ``last.pt`` with the final weights."""
        meta = {
            "settings": self.settings,
            "step": step,
            "epoch": epoch,
            "map": last_map,
            "best_map": best_map,
            "weights_step": step,
            **self._categories(),
        }
        return export_weights(model, self.run_dir / "last.pt", meta)

    def _categories(self) -> dict[str, Any]:
        """``{"categories": [{"id", "name"}, ...]}`` in file order (label i = entry i - 1)."""
        if not self.categories:
            return {}
        return {
            "categories": [
                {"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in self.categories
            ]
        }
