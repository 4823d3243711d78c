"""``--mode benchmark``: time the training step on synthetic device tensors (no dataset needed).

Builds the same model, optimiser and :class:`ssd_train.train_step.TrainStep` as training, runs
``benchmark.warmup_steps`` untimed steps (compilation, allocator warm-up) then
``benchmark.timed_steps`` timed ones on one fixed batch already on the device, and reports
images per second over all ranks (global batch x steps / seconds, synchronised at both ends),
Dynamo's graph / break / recompile counts and peak memory; ``--benchmark.json FILE`` also writes
them as JSON (:meth:`BenchmarkResult.as_json`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch
from ssd_core import COCO_NUM_CLASSES

from ssd_train.components import build_components, synthetic_batch
from ssd_train.distributed import (
    barrier,
    broadcast_seed,
    destroy,
    init_distributed,
    seed_everything,
)
from ssd_train.lr_schedule import LRSchedule
from ssd_train.settings import Settings
from ssd_train.train_step import ensure_momentum_buffers


@dataclass(frozen=True)
class BenchmarkResult:
    """Throughput, compilation counts and peak memory of the timed steps (rank 0's view)."""

    images_per_second: float
    seconds: float
    timed_steps: int
    global_batch: int
    batch_size: int
    world_size: int
    device: str
    compiled: bool
    compile_mode: str
    precision: str
    graphs: int
    graph_breaks: int
    recompiles: int
    peak_memory_bytes: int
    peak_memory_kind: str

    def as_json(self) -> dict[str, object]:
        """The ``--benchmark.json`` record (``compile_mode`` is "eager" when not compiled)."""
        return {
            "img_per_s": self.images_per_second,
            "step_ms": 1000.0 * self.seconds / self.timed_steps,
            "graph_breaks": self.graph_breaks,
            "graphs": self.graphs,
            "recompiles": self.recompiles,
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_kind": self.peak_memory_kind,
            "device": self.device,
            "precision": self.precision,
            "compile_mode": self.compile_mode if self.compiled else "eager",
            "batch_size": self.batch_size,
            "global_batch": self.global_batch,
            "world_size": self.world_size,
            "timed_steps": self.timed_steps,
        }


def compile_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process, from ``torch._dynamo`` counters."""
    from torch._dynamo.utils import counters

    graphs = int(counters["stats"]["unique_graphs"])
    return graphs, int(sum(counters["graph_break"].values()))


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak memory in bytes and what it measures: the CUDA caching allocator's peak allocation on
    CUDA (``torch.cuda.max_memory_allocated``), else this process's peak resident set size
    (``resource.getrusage``; Linux reports KiB)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "cpu_peak_rss"


def run_benchmark(settings: Settings) -> BenchmarkResult:
    """Warm up, time ``benchmark.timed_steps`` train steps, print and return img/s (all ranks).

    Graph counts: ``graphs`` are Dynamo graphs compiled in this process (rank 0), ``graph_breaks``
    the breaks Dynamo hit, ``recompiles`` the graphs compiled during the timed steps (after the
    warm-up steps, or after the first step without warm-up): 0 in a steady state. Under DDP the
    update region compiles twice during the warm-up: DDP rebuilds its gradient buckets after the
    first iteration, the gradients become views of the new buckets, and Dynamo's aliasing guard on
    them fails once (training's ``TrainStep.warm_up`` runs both steps before ``run_start``).
    The SGD momentum buffers are created first, as ``TrainStep.warm_up`` does in training.
    Writes ``benchmark.json`` (rank 0) when set.
    """
    from torch._dynamo.utils import counters

    if settings.model.num_classes is None:  # no dataset to count categories: COCO's 80 + 1
        model = settings.model.model_copy(update={"num_classes": COCO_NUM_CLASSES})
        settings = settings.model_copy(update={"model": model})
    counters.clear()
    ctx = init_distributed(settings.distributed, settings.device)
    try:
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        seed = broadcast_seed(settings.seed)
        seed_everything(seed + ctx.rank)
        c = build_components(settings, ctx)
        global_batch = settings.global_batch_size(ctx.world_size)
        small = settings.base_learning_rate(ctx.world_size) * 0.01  # small: stay finite
        LRSchedule(small).apply(c.optimizer, 0)
        ensure_momentum_buffers(c.optimizer)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        accum = settings.optim.grad_accumulation_steps
        b = settings.benchmark
        micro = [
            synthetic_batch(
                settings.data.batch_size,
                settings.data.max_boxes,
                settings.model.num_classes,
                ctx.device,
                boxes_per_image=b.boxes_per_image,
                seed=seed + ctx.rank * accum + i,
            )
            for i in range(accum)
        ]
        for _ in range(b.warmup_steps):
            c.train_step(micro)
        graphs_before_timed = compile_counts()[0] if b.warmup_steps else None
        _synchronize(ctx.device)
        barrier()
        start = time.perf_counter()
        for _ in range(b.timed_steps):
            out = c.train_step(micro)
            if graphs_before_timed is None:  # no warm-up: the first timed step compiles
                graphs_before_timed = compile_counts()[0]
        float(out.loss)  # wait for the last step
        _synchronize(ctx.device)
        barrier()
        seconds = time.perf_counter() - start
        graphs, breaks = compile_counts()
        memory, memory_kind = peak_memory(ctx.device)
        result = BenchmarkResult(
            images_per_second=global_batch * b.timed_steps / seconds,
            seconds=seconds,
            timed_steps=b.timed_steps,
            global_batch=global_batch,
            batch_size=settings.data.batch_size,
            world_size=ctx.world_size,
            device=torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
            compiled=c.compiled,
            compile_mode=settings.compile_mode,
            precision="bf16" if c.autocast_dtype is torch.bfloat16 else "fp32",
            graphs=graphs,
            graph_breaks=breaks,
            recompiles=graphs - (graphs_before_timed or 0),
            peak_memory_bytes=memory,
            peak_memory_kind=memory_kind,
        )
        if ctx.is_main:
            mode = f" ({settings.compile_mode})" if c.compiled else ""
            print(
                f"benchmark: {result.images_per_second:.2f} img/s ({result.timed_steps} steps of global"
                f" batch {global_batch} in {seconds:.2f} s; {ctx.world_size}x {result.device},"
                f" {result.precision}, compiled={result.compiled}{mode}, channels_last={settings.channels_last};"
                f" {graphs} graphs, {breaks} graph breaks, {result.recompiles} recompiles,"
                f" peak memory {memory / 2**20:.0f} MiB ({memory_kind}))",
                flush=True,
            )
            if b.json_path is not None:
                b.json_path.parent.mkdir(parents=True, exist_ok=True)
                b.json_path.write_text(json.dumps(result.as_json(), indent=2) + "\n")
        return result
    finally:
        destroy()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
