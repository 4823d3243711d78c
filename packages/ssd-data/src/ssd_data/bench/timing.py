"""Timed runs of ``ssd-data bench``: throughput and where the CPU time goes.

Loader-worker CPU time is measured inside the worker function with ``time.thread_time`` (the
calling thread's CPU clock: per worker thread, or the worker process's thread) and carried with
each sample to the collate, which runs in the training process; the training process's own CPU
time is ``time.process_time`` over the timed batches minus the worker threads' share (thread
workers run inside it).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ssd_data.coco import CocoIndex
from ssd_data.config import DataConfig
from ssd_data.pipeline import _build_graph, build_train_loader


@dataclass(frozen=True)
class Measured:
    """One timed run: img/s and CPU/device milliseconds per image (None: not applicable)."""

    images_per_s: float
    host_cpu_ms: float
    process_cpu_ms: float
    device_ms: float | None = None


@dataclass(frozen=True)
class TimedMap:
    """Wraps a map function: stores its CPU time (thread clock) on the sample it returns."""

    fn: Callable[[Any], Any]

    def __call__(self, item: Any) -> Any:
        start = time.thread_time()
        sample = self.fn(item)
        sample.host_cpu_s = time.thread_time() - start
        return sample


class TimedCollate:
    """Wraps a collate (training process): sums the samples' worker CPU time and count."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn, self.host_s, self.images = fn, 0.0, 0

    def __call__(self, samples: list[Any]) -> Any:
        self.host_s += sum(s.host_cpu_s for s in samples)
        self.images += len(samples)
        return self.fn(samples)


def _timed_loop(
    batches: Iterable[Any], steps: int, batch_size: int, worker_clock: Callable[[], float]
) -> tuple[float, float, float, int]:
    """Consume ``steps`` batches, the first untimed; returns (img/s, process CPU s, worker CPU
    s inside the process, images timed)."""
    it = iter(batches)
    next(it)
    wall, cpu, worker = time.perf_counter(), time.process_time(), worker_clock()
    count = 0
    for batch in itertools.islice(it, steps - 1):
        assert batch[0].shape[0] == batch_size and batch[0].dtype == torch.uint8
        count += batch_size
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    if count == 0:
        raise SystemExit("ssd-data bench: too few images for two batches; raise --images")
    elapsed = time.perf_counter() - wall
    return count / elapsed, time.process_time() - cpu, worker_clock() - worker, count


def run_ours(
    root: Path,
    workers: int,
    worker_type: str,
    impl: str,
    batch_size: int,
    max_boxes: int,
    augment_device: str,
) -> Measured:
    """One epoch of :func:`build_train_loader` (CPU path, or the device path on the GPU when
    there is one, else on the CPU), with the worker function and collate timed."""
    cuda = torch.cuda.is_available()
    cfg = DataConfig(
        root=root,
        batch_size=batch_size,
        num_workers=workers,
        worker_type=worker_type,  # type: ignore[arg-type]
        augment_impl=impl,  # type: ignore[arg-type]
        augment_device=augment_device,  # type: ignore[arg-type]
        max_boxes=max_boxes,
        pin_memory=cuda,
    )
    device = "cuda" if cuda else "cpu"
    loader = build_train_loader(cfg, 0, 1, 0, device)
    collate = TimedCollate(loader._collate)
    loader._loader = _build_graph(
        loader._sampler, TimedMap(loader._map_fn), collate, batch_size, True, cfg, device
    )
    augmenter = loader._augmenter
    if augmenter is not None:
        augmenter.timing = True
    steps = loader.shard_size // batch_size
    threads = worker_type == "thread" or workers == 0  # the map runs inside this process

    def worker_clock() -> float:
        return collate.host_s if threads else 0.0

    try:
        rate, cpu, inside, count = _timed_loop(loader, steps, batch_size, worker_clock)
    finally:
        loader.close()
    device_ms = None
    if augmenter is not None and augmenter.images:
        device_ms = 1000 * augmenter.device_seconds_total() / augmenter.images
    return Measured(
        rate,
        1000 * collate.host_s / max(collate.images, 1),
        1000 * (cpu - inside) / count,
        device_ms,
    )


class _TimedDataset(Dataset):
    """A dataset whose items carry their CPU time (thread clock) as a float64 tensor."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        start = time.thread_time()
        item = self.dataset[i]
        return (*item, torch.tensor(time.thread_time() - start, dtype=torch.float64))


def run_baseline(
    root: Path, workers: int, batch_size: int, max_boxes: int, make: Callable[..., Any]
) -> Measured:
    """The torchvision baseline (``make(index, image_dir, max_boxes)`` -> dataset) in a
    DataLoader with process workers, timed like :func:`run_ours`."""
    index = CocoIndex.from_json(root / "annotations" / "instances_train2017.json", skip_empty=True)
    dataset = _TimedDataset(make(index, root / "train2017", max_boxes))
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True
    )
    host = [0.0, 0]

    def record(batches: Iterable[Any]) -> Iterable[Any]:
        for batch in batches:
            host[0] += float(batch[-1].sum())
            host[1] += len(batch[-1])
            yield batch

    steps = len(dataset) // batch_size
    rate, cpu, _, count = _timed_loop(record(loader), steps, batch_size, lambda: 0.0)
    return Measured(rate, 1000 * host[0] / max(host[1], 1), 1000 * cpu / count)
