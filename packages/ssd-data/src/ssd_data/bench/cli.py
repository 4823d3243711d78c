"""``ssd-data bench``: training input pipeline throughput against a torchvision baseline.

Both pipelines read the same generated COCO-like JPEGs (:mod:`ssd_data.bench.data`) and
produce the same thing: batches of uint8 [N, 3, 300, 300] images after the MLPerf SSD
augmentation, with padded boxes and labels. The baseline is what one would write with the
standard tools: ``torchvision.io.decode_image`` + transforms v2 on tv_tensors
(``RandomIoUCrop`` with the seven SSD options and one trial, ``SanitizeBoundingBoxes``,
``RandomHorizontalFlip``, ``Resize((300, 300))``, ``ColorJitter(0.125, 0.5, 0.5, 0.05)``) in a
``torch.utils.data.DataLoader`` with the same number of (process) workers. Ours is
:func:`ssd_data.pipeline.build_train_loader` on its CPU path (``cpu-fast``, ``cpu-reference``) and
on its device path (``device``: workers read bytes and draw decisions, decode and pixel work on
the GPU, or on the CPU when there is none). The first batch (worker start-up) is not timed.

Per pipeline: img/s; ``host_cpu_ms_per_img``, the loader workers' own CPU time per image
(``time.thread_time`` inside the worker function: per thread for thread workers, the worker
process's thread for process workers; never the consumer's work); ``process_cpu_ms_per_img``,
the training process's own CPU time per image minus its worker threads' (collate, pinning,
copies, and for the device path the launches and any CPU decode; on a machine without a GPU the
whole device path runs here); ``device_ms_per_img``, the device path's time per image in the
augmenter (CUDA events on a GPU, wall time on the CPU). ``--json FILE`` writes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ssd_data.bench.data import write_bench_dataset
from ssd_data.bench.op_budget import BatchCount, count_device_batch
from ssd_data.bench.timing import Measured, run_baseline, run_ours
from ssd_data.coco import CocoIndex
from ssd_data.config import DataConfig
from ssd_data.host.color import jitter_reference
from ssd_data.host.samples import TrainSampleFn
from ssd_data.samples.jitter import sample_jitter


class TorchvisionBaseline(Dataset):
    """The MLPerf training augmentation with torchvision transforms v2 (the baseline)."""

    def __init__(self, index: CocoIndex, image_dir: Path, max_boxes: int) -> None:
        from torchvision.transforms import v2

        self.index, self.image_dir, self.max_boxes = index, image_dir, max_boxes
        self.transform = v2.Compose(
            [
                v2.RandomIoUCrop(
                    min_scale=0.3,
                    max_scale=1.0,
                    min_aspect_ratio=0.5,
                    max_aspect_ratio=2.0,
                    sampler_options=[0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0],  # 1.0 = keep the image
                    trials=1,
                ),
                v2.SanitizeBoundingBoxes(),
                v2.RandomHorizontalFlip(0.5),
                v2.Resize((300, 300)),
                v2.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05),
            ]
        )

    def __len__(self) -> int:
        return self.index.num_images

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors
        from torchvision.io import ImageReadMode, decode_image

        path = self.image_dir / self.index.file_name(i)
        image = tv_tensors.Image(decode_image(str(path), mode=ImageReadMode.RGB))
        h, w = image.shape[-2:]
        boxes, labels, _ = self.index.annotations(i)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(boxes) * scale, format="XYXY", canvas_size=(h, w)
            ),
            "labels": torch.from_numpy(labels),
        }
        image, target = self.transform(image, target)
        k = min(len(target["labels"]), self.max_boxes)
        out_boxes = torch.zeros(self.max_boxes, 4)
        out_labels = torch.zeros(self.max_boxes, dtype=torch.int64)
        out_boxes[:k] = target["boxes"][:k] / 300.0
        out_labels[:k] = target["labels"][:k]
        return image.as_subclass(torch.Tensor), out_boxes, out_labels


@dataclass(frozen=True)
class Result:
    """One pipeline's numbers (medians over the repeats); ``device_ms`` None off the device path."""

    pipeline: str
    workers: int
    worker_type: str
    images_per_s: float
    host_cpu_ms: float | None = None
    process_cpu_ms: float | None = None
    device_ms: float | None = None
    ops_per_batch: int | None = None
    syncs_per_batch: int | None = None

    @property
    def per_worker(self) -> float:
        return self.images_per_s / max(self.workers, 1)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.pipeline,
            "workers": self.workers,
            "worker_type": self.worker_type,
            "img_per_s": self.images_per_s,
            "host_cpu_ms_per_img": self.host_cpu_ms,
            "process_cpu_ms_per_img": self.process_cpu_ms,
            "device_ms_per_img": self.device_ms,
            "ops_per_batch": self.ops_per_batch,
            "syncs_per_batch": self.syncs_per_batch,
        }


def fidelity(root: Path, num_images: int) -> tuple[float, float]:
    """Mean |fast - reference| of the augmented images (same seeds: same crops, flips and
    jitter factors), and the mean change the reference colour jitter itself makes, both in
    grey levels (0..255), over the first ``num_images`` images."""
    index = CocoIndex.from_json(root / "annotations" / "instances_train2017.json", skip_empty=True)
    image_dir = root / "train2017"
    fast = TrainSampleFn(index, image_dir, seed=0, max_boxes=1)
    ref = TrainSampleFn(index, image_dir, seed=0, max_boxes=1, impl="reference")
    diffs, changes = [], []
    for i in range(min(num_images, index.num_images)):
        a, b = fast((0, i, i)), ref((0, i, i))
        diffs.append(np.abs(a.image.astype(np.int16) - b.image).mean())
        rgb = Image.open(image_dir / index.file_name(i)).convert("RGB")
        p = sample_jitter(np.random.default_rng(i))
        plain = rgb.resize((300, 300), Image.Resampling.BILINEAR)
        changes.append(
            np.abs(np.asarray(jitter_reference(plain, p), np.int16) - np.asarray(plain)).mean()
        )
    return float(np.mean(diffs)), float(np.mean(changes))


def format_table(results: list[Result]) -> str:
    """Fixed-width table; speed-up is img/s per worker relative to the first row; CPU and
    device columns in ms per image ('-': not applicable)."""
    base = results[0].per_worker
    head = (
        f"{'pipeline':<24} {'workers':>7} {'type':>8} {'img/s':>8} {'img/s/worker':>13} "
        f"{'host ms':>8} {'proc ms':>8} {'dev ms':>8} {'speed-up':>9}"
    )
    lines = [head, "-" * len(head)]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in results:
        lines.append(
            f"{r.pipeline:<24} {r.workers:>7} {r.worker_type:>8} {r.images_per_s:>8.1f} "
            f"{r.per_worker:>13.1f} {ms(r.host_cpu_ms):>8} {ms(r.process_cpu_ms):>8} "
            f"{ms(r.device_ms):>8} {r.per_worker / base:>8.2f}x"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ssd-data bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--images", type=int, default=512, help="COCO-like JPEGs to generate and read")
    p.add_argument("--workers", type=int, default=2, help="workers of every pipeline")
    p.add_argument(
        "--worker-type",
        choices=["thread", "process", "both"],
        default="both",
        help="worker type of our pipeline (the DataLoader baseline always uses processes)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-boxes", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="runs per pipeline; the median is shown")
    p.add_argument("--reference", action="store_true", help="also time augment_impl=reference")
    p.add_argument("--no-baseline", action="store_true", help="skip the torchvision baseline")
    p.add_argument(
        "--fidelity",
        type=int,
        default=48,
        help="images on which to compare augment_impl fast vs reference pixels (0: skip)",
    )
    p.add_argument("--data", type=Path, default=None, help="reuse/keep the generated images here")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    p.add_argument(
        "--count-batches",
        default="8,32",
        help="batch sizes at which to count the device path's ops and syncs per batch "
        "(comma-separated; sizes above --images are left out)",
    )
    return p


def _prepare(root: Path, num_images: int) -> str:
    """Write the images unless ``root`` already holds a bench dataset; describe them."""
    marker = root / "annotations" / "instances_train2017.json"
    t0 = time.perf_counter()
    if not marker.exists():
        write_bench_dataset(root, num_images)
    files = list((root / "train2017").glob("*.jpg"))
    kb = sum(f.stat().st_size for f in files) / max(len(files), 1) / 1024
    return f"{len(files)} COCO-like JPEGs in {root} (mean {kb:.0f} KB; {time.perf_counter() - t0:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssd-data bench``; prints the table and returns 0."""
    args = _parser().parse_args(argv)
    if args.images < 2 * args.batch_size:
        raise SystemExit("ssd-data bench: --images must be at least 2 x --batch-size")
    kinds = ["thread", "process"] if args.worker_type == "both" else [args.worker_type]
    w, b, m = args.workers, args.batch_size, args.max_boxes
    with tempfile.TemporaryDirectory(prefix="ssd-bench-") as tmp:
        root = args.data or Path(tmp)
        print(_prepare(root, args.images), flush=True)
        runs: list[tuple[str, str, Callable[[], Measured]]] = []
        if not args.no_baseline:
            baseline = partial(run_baseline, root, w, b, m, TorchvisionBaseline)
            runs.append(("torchvision-v2", "process", baseline))
        default_kind = DataConfig().worker_type
        pipelines = [("cpu-fast", "fast", "cpu")]
        if args.reference:
            pipelines.append(("cpu-reference", "reference", "cpu"))
        pipelines.append(("device", "fast", "cuda"))  # on the CPU when there is no GPU
        for name, impl, where in pipelines:
            for kind in kinds:
                label = name if len(kinds) == 1 or kind == default_kind else f"{name}-{kind}"
                runs.append((label, kind, partial(run_ours, root, w, kind, impl, b, m, where)))
        measured: list[list[Measured]] = [[] for _ in runs]
        for _ in range(args.repeats):  # interleaved, so background load hits every pipeline alike
            for i, (_, _, run) in enumerate(runs):
                measured[i].append(run())
                gc.collect()  # no finished pipeline's garbage inherited by the next forks
        diff = fidelity(root, args.fidelity) if args.fidelity > 0 else None
        counted = _count_ops(root, args, [impl for _, impl, where in pipelines if where == "cuda"])
    results = []
    for (name, kind, _), ms in zip(runs, measured, strict=True):
        count = counted.get(("fast", b)) if name.startswith("device") else None
        results.append(
            Result(
                name,
                w,
                kind,
                *_medians(ms),
                ops_per_batch=None if count is None else count.ops,
                syncs_per_batch=None if count is None else count.syncs,
            )
        )
    print(format_table(results))
    if diff is not None:
        print(
            f"fast vs reference augmentation: mean |difference| {diff[0]:.1f} grey levels over "
            f"{args.fidelity} images (the colour jitter itself changes pixels by {diff[1]:.1f})"
        )
    for line in _count_lines(list(counted.values())):
        print(line)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs "
        f"(load average {load}), torch {torch.__version__}, numpy {np.__version__}, "
        f"batch {b}, median of {args.repeats}"
    )
    if args.json is not None:
        report = {
            "pipelines": [r.as_json() for r in results],
            "op_counts": [c.as_json() for c in counted.values()],
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _count_ops(
    root: Path, args: argparse.Namespace, impls: list[str]
) -> dict[tuple[str, int], BatchCount]:
    """The device path's ops and syncs per batch (one counted batch each, untimed) at the
    bench's batch size and at ``--count-batches``, for each jitter impl the bench runs on the
    device."""
    sizes = sorted({int(v) for v in args.count_batches.split(",") if v.strip()} | {args.batch_size})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        (impl, size): count_device_batch(root, size, impl, args.max_boxes, device)  # type: ignore[arg-type]
        for impl in impls
        for size in sizes
        if size <= args.images
    }


def _count_lines(counts: list[BatchCount]) -> list[str]:
    """One line per counted batch, with the growth relative to the smallest batch."""
    lines = []
    for c in counts:
        first = min((x for x in counts if x.impl == c.impl), key=lambda x: x.batch_size)
        lines.append(
            f"device path ({c.impl} jitter), batch {c.batch_size}: {c.ops} ops, {c.syncs} host "
            f"syncs per batch ({c.ops / first.ops:.2f}x batch {first.batch_size})"
        )
    return lines


def _medians(runs: list[Measured]) -> tuple[float, float, float, float | None]:
    """Median of each field over the repeats."""
    device = [r.device_ms for r in runs if r.device_ms is not None]
    return (
        statistics.median(r.images_per_s for r in runs),
        statistics.median(r.host_cpu_ms for r in runs),
        statistics.median(r.process_cpu_ms for r in runs),
        statistics.median(device) if device else None,
    )
