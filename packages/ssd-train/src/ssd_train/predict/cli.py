"""``ssd-predict``: run trained weights on image files, or export the model to ONNX / torch.export.

Exit status: 0 done, 2 bad input (one message on stderr naming the file or argument; also an
--out that cannot be created, checked before the model is loaded), 4 a write failed while running
(disk full, permission: one message naming the file), 1 a bug (a traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

DESCRIPTION = """\
Detect objects in images with SSD300 weights written by ssd-train (best.pt / last.pt), or export
the model.

Predict: every image named by SOURCE (image files, folders searched recursively, or glob patterns
in quotes) is resized and normalised exactly as in evaluation; the detections scoring above
--score-threshold are drawn on a copy of the image in --out DIR (boxes, class names, scores) and
written to DIR/predictions.json as a COCO results list of {"image_id", "category_id",
"bbox": [x, y, w, h] in pixels, "score", "file_name"}. image_id is the COCO id when --gt lists the
file, else the number in the file name when every file has a distinct one, else the file's index.
Unreadable images are skipped and counted (also images whose header declares more than
--max-image-pixels pixels: decompression bombs).

Export: --export onnx|pt2 writes the model to the file --out FILE. Its input is float32
[N, 3, 300, 300] (N any batch size), RGB resized to 300 x 300 and normalised as
(pixel / 255 - mean) / std with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224,
0.225); its outputs are loc [N, 8732, 4] and logits [N, 8732, C], or with --postprocess the
decoded detections boxes [N, K, 4] (normalised ltrb), scores [N, K], labels [N, K], counts [N].
"""

EPILOG = """\
examples:
  ssd-predict --weights runs/X/best.pt photos/ --out predictions
  ssd-predict --weights runs/X/best.pt 'val2017/*.jpg' --gt instances_val2017.json \\
      --score-threshold 0.05 --out dets && ssd-eval --gt instances_val2017.json \\
      --detections dets/predictions.json
  ssd-predict --weights runs/X/best.pt --export onnx --out ssd300.onnx
  ssd-predict --weights runs/X/best.pt --export pt2 --postprocess --out ssd300.pt2

exit status: 0 done; 2 bad input or an --out that cannot be created (one message); 4 a write
failed (disk full, permission; one message naming the file); 1 a bug (a traceback).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ssd-predict",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="image files, folders or globs")
    p.add_argument("--weights", required=True, type=Path, help="best.pt / last.pt of a run")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="predict: output folder (default: predictions); export: the model file to write",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="keep detections scoring above this (default 0.3; 0.05 as in COCO evaluation)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (8)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast or fp32"
    )
    p.add_argument("--gt", type=Path, help="COCO ground-truth json: image ids and class names")
    p.add_argument("--no-draw", action="store_true", help="write predictions.json only")
    p.add_argument("--workers", type=int, default=4, help="image-reading threads (4)")
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="skip images whose header declares more pixels (default: the weights' "
        "data.max_image_pixels, else 40,000,000)",
    )
    p.add_argument("--export", choices=("onnx", "pt2"), help="export the model instead")
    p.add_argument(
        "--postprocess",
        action="store_true",
        help="export: include decode + NMS (both formats; a slow export: minutes on a CPU)",
    )
    return p


def _fail(message: str) -> int:
    print(f"ssd-predict: error: {message}", file=sys.stderr)
    return 2


def _device(name: str | None) -> torch.device:
    from ssd_train.predict.sources import PredictError

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PredictError(f"--device {name!r} is not a device (use cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PredictError("--device cuda: no CUDA device is available here (use --device cpu)")
    return device


def check_out(args: argparse.Namespace) -> None:
    """Check (and create) the output folder before anything is loaded: the predictions folder
    (``--out DIR``, default ``predictions``), or the folder of the export file (``--out FILE``).

    Raises:
        PredictError: no ``--out`` for an export, a folder given for an export file, or a
            folder that cannot be created or written (naming it and why).
    """
    from ssd_train.predict.sources import PredictError

    if args.export is not None:
        if args.out is None:
            raise PredictError(
                f"--export {args.export} needs --out FILE (e.g. ssd300.{args.export})"
            )
        if args.out.is_dir():
            raise PredictError(f"--out {args.out} is a folder; give the model file's name")
        folder = args.out.parent
    else:
        folder = args.out or Path("predictions")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or str(e)
        where = f" ({e.filename})" if e.filename and Path(e.filename) != folder else ""
        raise PredictError(
            f"--out {args.out or folder}: cannot create the folder {folder}: {reason}{where};"
            " choose another --out"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PredictError(
            f"--out {args.out or folder}: no write permission in {folder}; choose another --out"
        )


def run(args: argparse.Namespace) -> int:
    """Predict or export as ``args`` say; raises PredictError / ExportError on bad input."""
    from ssd_train.checkpoint.weights import load_exported
    from ssd_train.predict.export import export_model
    from ssd_train.predict.predictor import build_postprocessor
    from ssd_train.predict.sources import PredictError

    if not 0.0 <= args.score_threshold < 1.0:
        raise PredictError(f"--score-threshold must be in [0, 1), got {args.score_threshold}")
    if args.batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = _device(args.device) if args.export is None else torch.device("cpu")
    check_out(args)
    model, metadata = load_exported(args.weights, map_location=device)
    postprocessor = build_postprocessor(metadata, args.score_threshold)
    if args.export is not None:
        if args.sources:
            raise PredictError("--export takes no SOURCE images (it writes the model only)")
        print(f"exporting {args.weights} ({metadata.get('num_classes')} classes) to {args.out} ...")
        path = export_model(
            model, args.out, args.export, postprocessor if args.postprocess else None
        )
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0
    if not args.sources:
        raise PredictError("no SOURCE given: name image files, folders or globs (or use --export)")
    return _predict(args, model, metadata, postprocessor, device)


def _predict(args, model, metadata, postprocessor, device) -> int:  # type: ignore[no-untyped-def]
    from ssd_core import COCO_NUM_CLASSES
    from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS
    from tqdm import tqdm

    from ssd_train.checkpoint.files import atomic_write_bytes
    from ssd_train.predict.predictor import predict_files
    from ssd_train.predict.sources import (
        PredictError,
        assign_image_ids,
        collect_images,
        label_map,
    )

    paths = collect_images(args.sources)
    gt = None
    if args.gt is not None:
        from ssd_eval import GroundTruthError, load_ground_truth

        try:
            gt = load_ground_truth(args.gt)
        except GroundTruthError as e:
            raise PredictError(str(e)) from None
    num_classes = int(metadata.get("num_classes", COCO_NUM_CLASSES))
    labels = label_map(metadata, num_classes, gt)
    file_ids = (
        {Path(im["file_name"]).name: int(im["id"]) for im in gt.dataset["images"]} if gt else {}
    )
    image_ids = assign_image_ids(paths, file_ids)
    out = args.out or Path("predictions")
    data_settings = (metadata.get("settings") or {}).get("data") or {}
    resize_impl = data_settings.get("augment_impl", "fast")
    max_pixels = args.max_image_pixels or data_settings.get("max_image_pixels")
    autocast = torch.bfloat16 if args.precision == "bf16" else None
    print(
        f"{len(paths)} images, weights {args.weights} ({num_classes - 1} classes, names from "
        f"{labels.source}), device {device}",
        flush=True,
    )
    with tqdm(total=len(paths), unit="img", desc="ssd-predict", file=sys.stderr) as bar:
        result = predict_files(
            model,
            postprocessor,
            labels,
            paths,
            image_ids,
            out,
            device=device,
            batch_size=args.batch_size,
            autocast_dtype=autocast,
            resize_impl=resize_impl,
            max_pixels=max_pixels or DEFAULT_MAX_IMAGE_PIXELS,
            workers=args.workers,
            draw=not args.no_draw,
            progress=bar.update,
        )
    records = (json.dumps(result.records) + "\n").encode()
    atomic_write_bytes(out / "predictions.json", records, what="predictions file")
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"{result.images_done} images, {len(result.records)} detections above "
        f"{args.score_threshold}; {len(result.skipped)} unreadable images skipped; "
        f"wrote {out / 'predictions.json'}"
        + (f" and {len(result.drawn)} drawn images" if result.drawn else ""),
        flush=True,
    )
    if result.images_done == 0:
        raise PredictError(f"none of the {len(paths)} images could be read")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from ssd_train.checkpoint.weights import ExportError
    from ssd_train.predict.export import ExportFailed
    from ssd_train.predict.sources import PredictError
    from ssd_train.resilience.environment import ENVIRONMENT_EXIT_CODE, EnvironmentFailure

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except EnvironmentFailure as e:
        print(f"ssd-predict: error: {e}", file=sys.stderr)
        return ENVIRONMENT_EXIT_CODE
    except (PredictError, ExportFailed) as e:
        return _fail(str(e))
    except ExportError as e:  # torch's unpickling errors run over many lines: the first says it
        return _fail(str(e).strip().splitlines()[0])
    except RuntimeError as e:  # load_state_dict: a weights file of another model
        if "state_dict" in str(e):
            return _fail(f"{args.weights} does not hold SSD300 weights ({str(e).splitlines()[0]})")
        raise


if __name__ == "__main__":
    sys.exit(main())
