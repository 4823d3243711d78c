"""Export SSD300 to ONNX or a ``torch.export`` program (``.pt2``).

Input of every exported model: ``images`` float32 [N, 3, 300, 300] NCHW, RGB, normalised as the
model expects, i.e. ``(pixel / 255 - mean) / std`` per channel with ImageNet's
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) (``ssd_core.preprocess.normalize_images``)
after the evaluation resize (bilinear, straight to 300 x 300, no aspect-ratio padding). N is
dynamic (1..1024).

Outputs:
- raw (default): ``loc`` float32 [N, 8732, 4] box offsets (decode with ``ssd_core.box_coder.decode``
  against the 8732 default boxes) and ``logits`` float32 [N, 8732, C] class logits (softmax over C;
  index 0 = background);
- with ``postprocess=True``: also decode + softmax + per-class top-k + greedy NMS + per-image top-K,
  exactly ``ssd_core.postprocess.PostProcessor`` (fixed shapes, no data-dependent control flow):
  ``boxes`` float32 [N, K, 4] ltrb normalised to [0, 1], ``scores`` float32 [N, K] (descending),
  ``labels`` int64 [N, K] (1..C-1), ``counts`` int64 [N] (rows >= count are zero padding).
  Works for both formats. NMS is exported as the ``greedy`` backend (one unrolled step per
  candidate rank: ``topk_per_class`` = 200 makes a large graph, minutes to export on a CPU);
  the ``matrix`` / ``torchvision*`` backends have data-dependent loops or output sizes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

import torch
from ssd_core import PostProcessor
from torch import Tensor, nn

from ssd_train.resilience.environment import tensor_bytes, write_failure

FORMATS = ("onnx", "pt2")
MAX_BATCH = 1024
ONNX_OPSET = 18
RAW_OUTPUTS = ("loc", "logits")
POSTPROCESSED_OUTPUTS = ("boxes", "scores", "labels", "counts")


class ExportFailed(RuntimeError):
    """The exporter could not convert the model; the message names the format and the cause."""


class DetectorWithPostprocess(nn.Module):
    """SSD300 followed by :class:`PostProcessor`: normalised images -> padded detections.

    Args:
        model: SSD300 (float32) returning loc [N, 8732, 4], logits [N, 8732, C].
        postprocessor: its thresholds and sizes are baked into the export; NMS runs as the
            ``greedy`` backend (same detections as every backend; the only one without
            data-dependent control flow).
    """

    def __init__(self, model: nn.Module, postprocessor: PostProcessor) -> None:
        super().__init__()
        self.model = model
        # Every backend gives the same detections; only greedy has no data-dependent loop or
        # output size, so it is the one that can be traced into a fixed graph.
        self.postprocessor = PostProcessor(
            score_threshold=postprocessor.score_threshold,
            nms_iou_threshold=postprocessor.nms_iou_threshold,
            topk_per_class=postprocessor.topk_per_class,
            max_detections=postprocessor.max_detections,
            nms_backend="greedy",
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """images float32 [N, 3, 300, 300] normalised -> (boxes, scores, labels, counts)."""
        loc, logits = self.model(images)
        dets = self.postprocessor(loc, logits)
        return dets.boxes, dets.scores, dets.labels, dets.counts


def export_module(model: nn.Module, postprocessor: PostProcessor | None) -> nn.Module:
    """The float32 eval-mode module to export (with post-processing when given)."""
    model = model.float().eval()
    return model if postprocessor is None else DetectorWithPostprocess(model, postprocessor).eval()


def _example(batch: int = 2) -> Tensor:
    return torch.randn(batch, 3, 300, 300, generator=torch.Generator().manual_seed(0))


def _dynamic_shapes() -> dict[str, dict[int, torch.export.Dim]]:
    return {"images": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


def export_program(module: nn.Module) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module`` with a dynamic batch dimension (strict=False)."""
    with torch.no_grad():
        return torch.export.export(
            module, (_example(),), dynamic_shapes=_dynamic_shapes(), strict=False
        )


def export_model(
    model: nn.Module,
    out: Path | str,
    fmt: Literal["onnx", "pt2"],
    postprocessor: PostProcessor | None = None,
) -> Path:
    """Write ``model`` (optionally with ``postprocessor``) as ``fmt`` to ``out``; returns ``out``.

    ``pt2``: ``torch.export.save`` of the program; load with ``torch.export.load(out).module()``.
    ``onnx``: opset ``ONNX_OPSET`` through the dynamo exporter (onnxscript), one file (weights
    embedded), input ``images``, outputs named as in the module docstring.
    Raises :class:`ExportFailed` naming the format when the exporter fails.
    """
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    module = export_module(model, postprocessor)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")  # replaced atomically
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        program = export_program(module)
        if fmt == "pt2":
            torch.export.save(program, tmp)
        else:
            names = RAW_OUTPUTS if postprocessor is None else POSTPROCESSED_OUTPUTS
            onnx_program = torch.onnx.export(
                program,
                (_example(),),
                input_names=["images"],
                output_names=list(names),
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            assert onnx_program is not None
            onnx_program.save(str(tmp), external_data=False)
        os.replace(tmp, out)
    except (OSError, RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        need = tensor_bytes(dict(model.state_dict()))
        failure = write_failure(out, e, need_bytes=need, what=f"{fmt} export")
        if failure is not None:  # disk full, permission, ...: exit 4
            raise failure from e
        if isinstance(e, OSError):
            raise
        raise ExportFailed(f"{fmt} export failed: {type(e).__name__}: {e}") from e
    return out
