"""CPU time of ``ssd_core.postprocess.PostProcessor`` per NMS backend on trained-like outputs.

Run from the repository root: ``uv run python bench/nms_speed.py`` (about a minute on two cores).
Input: batch 32 (``--batch``), 81 classes, random logits with background dominant (+6) and,
per image, ``--objects`` objects: one class each, whose anchors centred within 0.08 of the object
centre get +8 (+- noise) on that class, so each class of an object has tens to hundreds of
heavily overlapping candidates above 0.05 while the other classes have few. Each backend is
timed ``--repeats`` times after one warm-up call (median shown); the detections of every backend
are compared with the default backend's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from ssd_core.anchors import default_boxes
from ssd_core.postprocess import PostProcessor


def trained_like_outputs(
    batch: int, objects: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc float32 [N, A, 4], logits float32 [N, A, 81]) with peaked class scores."""
    gen = torch.Generator().manual_seed(seed)
    anchors = default_boxes("xywh")
    a = anchors.shape[0]
    loc = 0.3 * torch.randn(batch, a, 4, generator=gen)
    logits = torch.randn(batch, a, 81, generator=gen)
    logits[..., 0] += 6.0
    for i in range(batch):
        for _ in range(objects):
            centre = torch.rand(2, generator=gen)
            near = ((anchors[:, :2] - centre).norm(dim=1) < 0.08).nonzero().squeeze(1)
            label = int(torch.randint(1, 81, (1,), generator=gen))
            logits[i, near, label] += 8.0 + torch.randn(near.numel(), generator=gen)
    return loc, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    loc, logits = trained_like_outputs(args.batch, args.objects)
    probs = logits.softmax(dim=-1)[..., 1:]
    per_class = (probs > 0.05).sum(dim=1).clamp(max=200)  # candidates per (image, class)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"load average {os.getloadavg()[0]:.1f}; candidates per image (after top-200 per "
        f"class): mean {per_class.sum(dim=1).float().mean():.0f}, busiest class "
        f"{int(per_class.max())}"
    )
    header = f"{'backend':20} {'s/batch':>8} {'ms/image':>9} {'vs greedy':>9} {'same dets':>9}"
    print(header)
    print("-" * len(header))
    backends = ["matrix", "greedy", "torchvision_single", "torchvision"]
    results, times = {}, {}
    for backend in backends:
        post = PostProcessor(nms_backend=backend)  # type: ignore[arg-type]
        post(loc[:2], logits[:2])  # warm-up
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            results[backend] = post(loc, logits)
            runs.append(time.perf_counter() - start)
        times[backend] = statistics.median(runs)
    for backend in backends:
        same = all(
            torch.equal(x, y) for x, y in zip(results[backend], results["matrix"], strict=True)
        )
        t = times[backend]
        print(
            f"{backend:20} {t:8.3f} {1000 * t / args.batch:9.1f} "
            f"{times['greedy'] / t:8.2f}x {same!s:>9}"
        )


if __name__ == "__main__":
    main()
