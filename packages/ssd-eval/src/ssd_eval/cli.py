"""`ssd-eval`: score a COCO results file, or benchmark scoring speed.

ssd-eval --gt instances_val2017.json --detections dets.json [--json OUT] [--plots DIR]
         [--sort KEY] [--confusion-score S] [--backend B]
ssd-eval score --gt ... (the same, spelled out)
ssd-eval bench [--images 5000] [--detections-per-image 200] [--no-pycocotools]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ssd_eval.detections import DetectionsError, check_rows, load_detections
from ssd_eval.groundtruth import GroundTruthError, load_ground_truth
from ssd_eval.per_class_table import SORT_KEYS, format_per_class_table
from ssd_eval.scoring import BACKENDS, BackendUnavailableError, CocoScorer
from ssd_eval.summary import format_summary

_EPILOG = """\
examples:
  ssd-eval --gt data/coco2017/annotations/instances_val2017.json --detections dets.json
  ssd-eval --gt instances_val2017.json --detections dets.json --json scores.json
  ssd-eval --gt instances_val2017.json --detections dets.json --plots plots --sort name
  ssd-eval bench --images 5000          # how fast scoring runs (ssd-eval bench --help)

'ssd-eval score ...' is the same as 'ssd-eval ...'; 'ssd-eval bench' times the scoring.
"""


def _score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssd-eval",
        description="Score COCO box detections (a COCO results file) against the ground truth and\n"
        "print the 12 COCO numbers (box mAP first).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--gt",
        required=True,
        type=Path,
        metavar="FILE",
        help="the ground-truth annotation file (instances_val2017.json)",
    )
    parser.add_argument(
        "--detections",
        required=True,
        type=Path,
        metavar="FILE",
        help="the detections, a COCO results file: a JSON list of objects with image_id,"
        " category_id, bbox [x, y, width, height] in pixels and score",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help='also write the result to this file as {"mAP": ..., "stats": [12 numbers],'
        ' "per_class": [{"category_id", "name", "ap", "ap50", "ap75", "ap_small", "ap_medium",'
        ' "ap_large", "ar100", "gt", "detections"}, ...]} (-1: no ground truth in that range)',
    )
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="also write pr_curves.png and confusion_matrix.png into this folder",
    )
    parser.add_argument(
        "--sort",
        choices=SORT_KEYS,
        default="ap",
        help="order of the per-category table: ap, ap50, ap75, ar100 (weakest first), gt (most"
        " boxes first), name or id (default: ap)",
    )
    parser.add_argument(
        "--confusion-score",
        type=float,
        default=0.25,
        metavar="S",
        help="score threshold of the detections in the confusion matrix (default: 0.25)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="faster",
        help="scoring library: faster (faster-coco-eval) or pycocotools, which is slower;"
        " both give the same numbers (default: faster)",
    )
    return parser


def _bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssd-eval bench",
        description="Time scoring of a val2017-sized synthetic job with ssd_eval (without and with "
        "the per-class output) and pycocotools.",
    )
    parser.add_argument(
        "--images", type=int, default=5000, metavar="N", help="images (default: 5000, as val2017)"
    )
    parser.add_argument(
        "--detections-per-image",
        type=int,
        default=200,
        metavar="N",
        help="detections per image (default: 200, SSD's K)",
    )
    parser.add_argument(
        "--boxes-per-image",
        type=float,
        default=7.3,
        metavar="NUMBER",
        help="mean ground-truth boxes per image (default: 7.3, as val2017)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the made-up job (default: 0)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        metavar="N",
        help="time each backend N times and keep the best (default: 1)",
    )
    parser.add_argument(
        "--no-pycocotools", action="store_true", help="time ssd_eval only, not pycocotools"
    )
    return parser


def score_main(argv: Sequence[str]) -> int:
    parser = _score_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.confusion_score <= 1.0:
        parser.error(f"--confusion-score must be in [0, 1], got {args.confusion_score}")
    try:
        gt = load_ground_truth(args.gt)
        rows = load_detections(args.detections)
        check_rows(rows, gt, source=str(args.detections))
        scorer = CocoScorer(gt, backend=args.backend, confusion_score=args.confusion_score)
        result = scorer.score(rows, check=False)
    except (GroundTruthError, DetectionsError, BackendUnavailableError) as error:
        print(f"ssd-eval: error: {error}", file=sys.stderr)
        return 2
    assert result.per_class is not None
    print(format_summary(result.stats))
    print(f"mAP = {result.map:.6f} ({args.backend}, {rows.shape[0]} detections)")
    print()
    print(format_per_class_table(result.per_class, sort=args.sort))
    written: list[Path] = []
    try:
        if args.json is not None:
            record = {
                "mAP": result.map,
                "stats": result.stats,
                "per_class": result.per_class.records(),
            }
            args.json.write_text(json.dumps(record, indent=2) + "\n")
        if args.plots is not None:
            from ssd_eval.per_class_plots import write_plots

            written = write_plots(result.per_class, args.plots)
    except OSError as error:
        print(f"ssd-eval: error: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 4
    for path in written:
        print(f"wrote {path}")
    return 0


def bench_main(argv: Sequence[str]) -> int:
    from ssd_eval.bench import run_bench

    args = _bench_parser().parse_args(argv)
    report, _ = run_bench(
        images=args.images,
        per_image=args.detections_per_image,
        mean_boxes=args.boxes_per_image,
        seed=args.seed,
        with_pycocotools=not args.no_pycocotools,
        repeats=args.repeats,
    )
    print(report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ssd-eval` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "bench":
        return bench_main(args[1:])
    if args and args[0] == "score":
        return score_main(args[1:])
    return score_main(args)


if __name__ == "__main__":
    sys.exit(main())
