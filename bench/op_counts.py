"""Aten operations and host syncs of the train step and of evaluation post-processing, per batch
size, side by side (``ssd_data.device.op_count``: on a GPU each operation is a kernel launch plus
Python overhead, and each sync makes the host wait for the device).

Run from the repository root: ``uv run python bench/op_counts.py`` (a few minutes on two cores).
Rows:
* train step: ``ssd_train``'s eager :class:`TrainStep` on SSD300 (81 classes, the settings'
  defaults: ``precision auto`` = bf16 autocast on a CPU with AVX512-BF16, gradient clipping), one
  micro-batch of synthetic images; the second step is counted (the first makes per-device
  constants);
* post-processing: ``PostProcessor()`` (matrix NMS, 81 classes) on random outputs
  (``0.5 randn`` offsets, ``3 randn`` logits: every image hits the 200-detection cap) and on the
  trained-like outputs of ``bench/nms_speed.py`` (peaked scores, 4 objects per image); the second
  call is counted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from ssd_core.postprocess import PostProcessor
from ssd_data.device.op_count import OpCount, ops_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nms_speed import trained_like_outputs


def train_step_counts(batches: list[int]) -> dict[int, OpCount]:
    """The eager train step's count at each batch size (one model, default settings)."""
    from ssd_train.components import build_components, synthetic_batch
    from ssd_train.distributed import DistributedContext
    from ssd_train.settings import load_settings
    from ssd_train.train_step import ensure_momentum_buffers

    torch.manual_seed(0)
    settings = load_settings(["--model.backbone-weights", "none", "--model.num-classes", "81",
                              "--device", "cpu", "--compile", "false"])  # fmt: skip
    cpu = torch.device("cpu")
    c = build_components(settings, DistributedContext(0, 1, 0, cpu))
    ensure_momentum_buffers(c.optimizer)
    out = {}
    for n in batches:
        micro = [synthetic_batch(n, settings.data.max_boxes, 81, cpu, seed=n)]
        c.train_step(micro)
        out[n] = ops_of(lambda micro=micro: c.train_step(micro))
    return out


def post_counts(batches: list[int], make: Callable[[int], tuple]) -> dict[int, OpCount]:
    """Post-processing's count at each batch size on ``make(batch)`` outputs."""
    post = PostProcessor()
    out = {}
    for n in batches:
        loc, logits = make(n)
        post(loc, logits)
        out[n] = ops_of(lambda loc=loc, logits=logits: post(loc, logits))
    return out


def _random(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return 0.5 * torch.randn(n, 8732, 4, generator=g), 3 * torch.randn(n, 8732, 81, generator=g)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        ("train step (eager)", train_step_counts([2, 4])),
        ("post-processing, random outputs", post_counts([8, 32], _random)),
        (
            "post-processing, trained-like",
            post_counts([8, 32], lambda n: trained_like_outputs(n, 4)),
        ),
    ]
    print(f"{'what':34} {'batch':>5} {'ops':>6} {'syncs':>5}  sync ops")
    print("-" * 72)
    for name, counts in rows:
        for n, c in counts.items():
            print(f"{name:34} {n:5d} {c.ops:6d} {c.syncs:5d}  {c.sync_names() or '-'}")
        small, large = counts.values()
        print(f"{'':34} {'ratio':>5} {large.ops / small.ops:6.2f}")


if __name__ == "__main__":
    main()
