"""`ssd-eval bench`: scoring time of a val2017-sized job, ours (faster-coco-eval) beside pycocotools.

Both start from the ground-truth json on disk and the same detections in memory; the columns are
load+index (read and index the json, turn detections into COCO results, loadRes), evaluate,
accumulate (with summarize), per-class (the per-category table and curves from the accumulated
arrays, and the confusion matrix) and their total. ssd_eval is timed without and with the
per-category output, side by side. The mAP of each and their largest |difference| over the 12
stats are shown too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssd_eval.detections import rows_to_records
from ssd_eval.groundtruth import load_ground_truth
from ssd_eval.scoring import CocoScorer
from ssd_eval.synthetic import make_detections, make_ground_truth


@dataclass
class BenchRow:
    """Timings (seconds) and stats of one backend."""

    backend: str
    load_s: float
    evaluate_s: float
    accumulate_s: float
    cpu_s: float
    stats: list[float]
    per_class_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.load_s + self.evaluate_s + self.accumulate_s + self.per_class_s


def time_ours(gt_path: Path, rows: np.ndarray, *, per_class: bool = False) -> BenchRow:
    """ssd_eval's own path: load_ground_truth + CocoScorer("faster").score (checks included),
    with or without the per-category output."""
    cpu_start = time.process_time()
    start = time.perf_counter()
    scorer = CocoScorer(load_ground_truth(gt_path), backend="faster", per_class=per_class)
    load = time.perf_counter() - start
    timings: dict[str, float] = {}
    start = time.perf_counter()
    result = scorer.score(rows, timings=timings)
    check = time.perf_counter() - start - sum(timings.values())
    per_class_s = timings.get("per_class", 0.0)
    return BenchRow(
        "ssd_eval (faster-coco-eval)" + (" + per-class" if per_class else ""),
        load + check + timings["load_results"],
        timings["evaluate"],
        timings["accumulate"],
        time.process_time() - cpu_start,
        result.stats,
        per_class_s,
    )


def time_pycocotools(gt_path: Path, rows: np.ndarray) -> BenchRow:
    """Plain pycocotools: COCO(json), loadRes(results list), COCOeval evaluate/accumulate/summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cpu_start = time.process_time()
        start = time.perf_counter()
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(rows_to_records(rows))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        load = time.perf_counter() - start
        start = time.perf_counter()
        evaluator.evaluate()
        evaluate = time.perf_counter() - start
        start = time.perf_counter()
        evaluator.accumulate()
        evaluator.summarize()
        accumulate = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    return BenchRow(
        "pycocotools", load, evaluate, accumulate, cpu, [float(v) for v in evaluator.stats]
    )


def format_table(rows: list[BenchRow]) -> str:
    """Markdown table; speed-ups and |diff| are relative to the last row (pycocotools when timed).

    Wall-clock seconds per phase, then the process CPU seconds of the whole job (steadier than
    wall time on a shared machine), and the speed-up by each.
    """
    reference = rows[-1]
    lines = [
        "| backend | load+index s | evaluate s | accumulate s | per-class s | total s | speed-up "
        "| CPU s | CPU speed-up | mAP | max abs diff (12 stats) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        diff = max(abs(a - b) for a, b in zip(row.stats, reference.stats, strict=True))
        lines.append(
            f"| {row.backend} | {row.load_s:.2f} | {row.evaluate_s:.2f} | {row.accumulate_s:.2f} | "
            f"{row.per_class_s:.2f} | {row.total_s:.2f} | {reference.total_s / row.total_s:.1f}x | {row.cpu_s:.2f} | "
            f"{reference.cpu_s / row.cpu_s:.1f}x | {row.stats[0]:.6f} | {diff:.1e} |"
        )
    return "\n".join(lines)


def _best(runs: list[BenchRow]) -> BenchRow:
    """The run with the least wall time, with the least CPU time over all runs."""
    best = min(runs, key=lambda row: row.total_s)
    return BenchRow(
        best.backend,
        best.load_s,
        best.evaluate_s,
        best.accumulate_s,
        min(row.cpu_s for row in runs),
        best.stats,
        best.per_class_s,
    )


def run_bench(
    images: int = 5000,
    per_image: int = 200,
    mean_boxes: float = 7.3,
    seed: int = 0,
    with_pycocotools: bool = True,
    repeats: int = 1,
) -> tuple[str, list[BenchRow]]:
    """Generate the job, time each backend `repeats` times (alternating, so that a busy spell
    on a shared machine hits both), keep the best of each; return (report text, rows)."""
    gt = make_ground_truth(images, seed=seed, mean_boxes=mean_boxes)
    rows = make_detections(gt, seed=seed, per_image=per_image)
    note = ""
    if with_pycocotools and importlib.util.find_spec("pycocotools") is None:
        note = "\npycocotools is not installed (it is a dev dependency): timed ssd_eval only"
        with_pycocotools = False
    ours: list[BenchRow] = []
    ours_per_class: list[BenchRow] = []
    reference: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="ssd-eval-bench-") as tmp:
        gt_path = Path(tmp) / "instances_synthetic.json"
        gt_path.write_text(json.dumps(gt))
        for _ in range(max(1, repeats)):
            ours.append(time_ours(gt_path, rows))
            ours_per_class.append(time_ours(gt_path, rows, per_class=True))
            if with_pycocotools:
                reference.append(time_pycocotools(gt_path, rows))
    results = [_best(ours), _best(ours_per_class)] + ([_best(reference)] if reference else [])
    header = (
        f"job: {images} images, {len(gt['annotations'])} ground-truth boxes "
        f"({sum(a['iscrowd'] for a in gt['annotations'])} crowd), {len(gt['categories'])} "
        f"categories, {rows.shape[0]} detections ({per_image} per image max), seed {seed}; "
        f"best of {max(1, repeats)}\n"
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    return header + note + "\n\n" + format_table(results) + "\n\n" + per_class_cost(
        *results[:2]
    ), results


def per_class_cost(without: BenchRow, with_per_class: BenchRow) -> str:
    """One line: what the per-category output adds to ssd_eval's scoring time."""
    extra = with_per_class.total_s - without.total_s
    extra_cpu = with_per_class.cpu_s - without.cpu_s
    own = with_per_class.per_class_s
    return (
        f"per-class output: wall {without.total_s:.2f} s without, {with_per_class.total_s:.2f} s "
        f"with ({extra:+.2f} s, {100.0 * extra / without.total_s:+.1f}%); CPU {without.cpu_s:.2f} s "
        f"without, {with_per_class.cpu_s:.2f} s with ({extra_cpu:+.2f} s, "
        f"{100.0 * extra_cpu / without.cpu_s:+.1f}%); the per-class step itself {own:.2f} s "
        f"({100.0 * own / without.total_s:.1f}% of the scoring time without it)"
    )
