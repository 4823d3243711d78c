"""``--mode benchmark``: time the training step on synthetic device tensors (no dataset needed).

Builds the same model, optimiser and :class:`ssd_train.train_step.TrainStep` as training, runs
``benchmark.warmup_steps`` untimed steps (compilation, allocator warm-up) then
``benchmark.timed_steps`` timed ones on one fixed batch already on the device, and reports
images per second over all ranks (global batch x steps / seconds, synchronised at both ends),
Dynamo's graph / break / recompile counts and peak memory; ``--benchmark.json FILE`` also writes
them as JSON (:meth:`BenchmarkResult.as_json`).

After the timed steps, one more untimed step is counted (:func:`count_step`): the aten operations
it dispatches (each a kernel launch plus Python overhead on a GPU) and the host syncs among them,
so the timed steps run without the counting mode. Inductor's CUDA-graph skips are read too: a run
that asked for ``--compile-mode reduce-overhead`` and got no CUDA graphs fails
(:class:`CudaGraphsSkippedError`, exit 2) after writing its JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from ssd_core import COCO_NUM_CLASSES
from ssd_data.device.op_count import OpCount, ops_of

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
from ssd_train.train_step import MicroBatch, TrainStep, ensure_momentum_buffers


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
    ops_per_step: int = 0
    syncs_per_step: int = 0
    sync_ops: dict[str, int] | None = None
    cudagraph_skips: int = 0

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
            "ops_per_step": self.ops_per_step,
            "syncs_per_step": self.syncs_per_step,
            "sync_ops": dict(self.sync_ops or {}),
            "cudagraph_skips": self.cudagraph_skips,
        }


def compile_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process, from ``torch._dynamo`` counters."""
    from torch._dynamo.utils import counters

    graphs = int(counters["stats"]["unique_graphs"])
    return graphs, int(sum(counters["graph_break"].values()))


class CudaGraphsSkippedError(ValueError):
    """``--compile-mode reduce-overhead`` was asked for but Inductor ran the step without CUDA
    graphs (the timed numbers are not those of CUDA graphs)."""


def cudagraph_skips() -> int:
    """How often Inductor skipped CUDA graphs in this process so far (``torch._dynamo`` counters:
    ``inductor.cudagraph_skips``; each skip is also logged under ``TORCH_LOGS=cudagraphs``)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def check_cudagraphs(compile_mode: str, compiled: bool, skips: int) -> None:
    """Raise :class:`CudaGraphsSkippedError` when CUDA graphs were asked for and skipped."""
    if compiled and compile_mode == "reduce-overhead" and skips:
        raise CudaGraphsSkippedError(
            f"--compile-mode reduce-overhead: Inductor skipped CUDA graphs {skips} time(s), so the"
            " step did not run as CUDA graphs (on a CPU device there are none; on CUDA, e.g. an"
            " input mutated outside the graph). Run with TORCH_LOGS=cudagraphs to see why, or use"
            " --compile-mode default"
        )


def count_step(step: TrainStep, micro_batches: Sequence[MicroBatch]) -> OpCount:
    """The aten operations and host syncs of one train step (``ssd_data.device.op_count``).

    The step runs its code eagerly (:meth:`TrainStep.run_eagerly`; Dynamo does not run compiled
    code under a dispatch mode anyway), so the count is that of the step's code: the launches of
    the eager step (a compiled step launches fewer) and every host sync its Python code makes.
    A compiled step never ran eagerly, so for it one uncounted eager step first makes the
    per-device constants (ImageNet mean/std, default boxes). The steps change the model and
    optimiser like any other.
    """
    with step.run_eagerly():
        if step.compiled:
            step(micro_batches)
        return ops_of(lambda: step(micro_batches))


def profile_steps(
    step: TrainStep,
    micro_batches: Sequence[MicroBatch],
    steps: int,
    path: Path,
    device: torch.device,
    write: bool,
) -> None:
    """Run ``steps`` untimed steps under ``torch.profiler`` (CPU, and CUDA on a GPU) and, when
    ``write``, save the Chrome/Perfetto trace to ``path`` (gzip-compressed for a ``.gz`` name):
    where a step's time goes, kernel by kernel."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(micro_batches)
        _synchronize(device)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(path))


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
    Then ``benchmark.trace_steps`` untimed steps are profiled when ``benchmark.trace`` is set
    (:func:`profile_steps`), one untimed step is counted (:func:`count_step`) and Inductor's CUDA-graph skips read.
    Writes ``benchmark.json`` (rank 0) when set.

    Raises:
        CudaGraphsSkippedError: ``reduce-overhead`` was asked for and CUDA graphs were skipped
            (after the JSON is written).
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
        skips = cudagraph_skips()
        if b.trace_path is not None:
            profile_steps(c.train_step, micro, b.trace_steps, b.trace_path, ctx.device, ctx.is_main)
        counted = count_step(c.train_step, micro)
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
            ops_per_step=counted.ops,
            syncs_per_step=counted.syncs,
            sync_ops=counted.sync_names(),
            cudagraph_skips=skips,
        )
        if ctx.is_main:
            mode = f" ({settings.compile_mode})" if c.compiled else ""
            print(
                f"benchmark: {result.images_per_second:.2f} img/s ({result.timed_steps} steps of global"
                f" batch {global_batch} in {seconds:.2f} s; {ctx.world_size}x {result.device},"
                f" {result.precision}, compiled={result.compiled}{mode}, channels_last={settings.channels_last};"
                f" {graphs} graphs, {breaks} graph breaks, {result.recompiles} recompiles,"
                f" peak memory {memory / 2**20:.0f} MiB ({memory_kind});"
                f" {counted.ops} ops / {counted.syncs} host syncs per step, counted eagerly;"
                f" {skips} CUDA-graph skips)",
                flush=True,
            )
            if b.json_path is not None:
                b.json_path.parent.mkdir(parents=True, exist_ok=True)
                b.json_path.write_text(json.dumps(result.as_json(), indent=2) + "\n")
        check_cudagraphs(settings.compile_mode, c.compiled, skips)
        return result
    finally:
        destroy()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
