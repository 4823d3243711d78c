"""Peak transient memory and CPU time of ``ssd_core.box_coder.encode``, float32 vs float64.

Run from the repository root: ``uv run python bench/encode_memory.py`` (about a minute on two
cores). For each compute dtype and batch size (max_boxes 128, all rows real boxes) it prints:

- ``analytic``: ``transient_bytes_per_image(M, dtype)`` x images per chunk, from tensor shapes;
- ``measured``: the process's peak resident memory during one call minus its resident memory
  before the call (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``); it
  includes the call's outputs (24 bytes per image and anchor, 50 MiB at batch 256);
- ``s/call``: wall time of one call (after one warm-up call at batch 8), median of ``--repeats``.

Rows with ``--max-transient-bytes none`` (one chunk) are measured only where the analytic
estimate is below ``--max-measure-gib``; above it the analytic figure alone is shown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from ssd_core.box_coder import DEFAULT_MAX_TRANSIENT_BYTES, encode, transient_bytes_per_image

MIB = 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (this bench needs Linux)")


def _measure(
    boxes: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype, budget: int | None, repeats: int
) -> tuple[float, float]:
    """(peak extra resident MiB, median seconds) of encode on these inputs."""
    times, peaks = [], []
    for _ in range(repeats):
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start = time.perf_counter()
        out = encode(boxes, labels, compute_dtype=dtype, max_transient_bytes=budget)
        times.append(time.perf_counter() - start)
        peaks.append((_status_kib("VmHWM") - before) / 1024)
        del out
    return max(peaks), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[114, 256])
    parser.add_argument("--max-boxes", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-measure-gib", type=float, default=1.6)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    m = args.max_boxes
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, max_boxes {m}, "
        f"budget {DEFAULT_MAX_TRANSIENT_BYTES // MIB} MiB, load average {os.getloadavg()[0]:.1f}"
    )
    warm_boxes = torch.rand(8, m, 4, generator=gen).sort(dim=-1).values
    for dtype in (torch.float32, torch.float64):
        encode(warm_boxes, torch.ones(8, m, dtype=torch.int64), compute_dtype=dtype)
    header = f"{'dtype':8} {'batch':>5} {'chunking':>9} {'chunk':>5} {'analytic MiB':>12} "
    header += f"{'measured MiB':>12} {'s/call':>7}"
    print(header)
    print("-" * len(header))
    for dtype in (torch.float32, torch.float64):
        per_image = transient_bytes_per_image(m, dtype)
        for n in args.batches:
            cxcy = torch.rand(n, m, 2, generator=gen)
            wh = 0.02 + 0.5 * torch.rand(n, m, 2, generator=gen)
            boxes = torch.cat((cxcy - wh / 2, cxcy + wh / 2), dim=-1).clamp(0, 1)
            labels = torch.randint(1, 81, (n, m), generator=gen)
            for budget in (DEFAULT_MAX_TRANSIENT_BYTES, None):
                chunk = n if budget is None else min(n, max(1, budget // per_image))
                analytic = chunk * per_image / MIB
                name = str(dtype).removeprefix("torch.")
                row = f"{name:8} {n:5d} {'budget' if budget else 'none':>9} {chunk:5d} "
                row += f"{analytic:12.0f} "
                if analytic / 1024 > args.max_measure_gib:
                    print(row + f"{'(skipped)':>12} {'':>7}", flush=True)
                    continue
                peak, seconds = _measure(boxes, labels, dtype, budget, args.repeats)
                print(row + f"{peak:12.0f} {seconds:7.2f}", flush=True)


if __name__ == "__main__":
    main()
