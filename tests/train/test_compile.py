"""The compiled whole train step (forward + loss with its backward, then clip + SGD) equals the
eager one, compiles to two graphs without breaks, and its warm-up leaves no recompilation."""

from __future__ import annotations

import pytest
import torch
from ssd_core.loss import SSDLoss
from ssd_core.model import SSD300
from ssd_data.config import COCO_MAX_BOXES
from ssd_train.benchmark import COCO_NUM_CLASSES, compile_counts, synthetic_batch
from ssd_train.lr_schedule import LRSchedule
from ssd_train.optim import build_optimizer
from ssd_train.train_step import TrainStep
from ssd_train.trainer_config import OptimConfig

# The shapes and settings of ``ssd-train --mode benchmark --compile true --data.batch-size 2
# --precision fp32`` (tests/train/test_benchmark.py): the same graphs, so whichever test runs second
# loads Inductor's kernels from its on-disk FX graph cache instead of generating them again.
NUM_CLASSES = COCO_NUM_CLASSES
BATCH = 2
CPU = torch.device("cpu")


def _run(compile: bool) -> tuple[list[float], dict[str, torch.Tensor], list[tuple[int, int]]]:
    """Losses of two steps, the parameters after the first one and (graphs, breaks) after the
    warm-up and after the two steps."""
    torch.manual_seed(0)
    model = SSD300(num_classes=NUM_CLASSES).to(memory_format=torch.channels_last)
    opt = build_optimizer(model, OptimConfig(), CPU)
    step = TrainStep(model, SSDLoss(), opt, device=CPU, grad_clip_norm=5.0, compile=compile)
    schedule = LRSchedule(base_lr=1e-3)
    counts = []
    if compile:
        step.warm_up(synthetic_batch(BATCH, COCO_MAX_BOXES, NUM_CLASSES, CPU, seed=50))
        counts.append(compile_counts())
    losses, after_first = [], {}
    for k in range(2):
        schedule.apply(opt, k)
        batch = synthetic_batch(BATCH, COCO_MAX_BOXES, NUM_CLASSES, CPU, seed=k)
        losses.append(float(step([batch]).loss))
        if k == 0:
            after_first = {n: p.detach().clone() for n, p in model.named_parameters()}
    counts.append(compile_counts())
    return losses, after_first, counts


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compiled_whole_step_equals_eager_step() -> None:
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    eager_losses, eager, _ = _run(compile=False)
    compiled_losses, compiled, counts = _run(compile=True)
    # one graph for forward + loss (Inductor also compiles its backward), one for clip + SGD;
    # the warm-up compiled both and the training steps reuse them
    assert counts == [(2, 0), (2, 0)]
    # fp32. The first loss comes from identical weights: only Inductor's reordering of float32
    # sums differs (rel 1e-5). The second follows a compiled backward and update, which the
    # very sharp loss of a random SSD amplifies a little (rel 2e-3).
    assert compiled_losses[0] == pytest.approx(eager_losses[0], rel=1e-5)
    assert compiled_losses[1] == pytest.approx(eager_losses[1], rel=2e-3)
    torch.manual_seed(0)
    init = {n: p.detach() for n, p in SSD300(num_classes=NUM_CLASSES).named_parameters()}
    eps = torch.finfo(torch.float32).eps
    diffs, norms = [], []
    for name, ref in eager.items():  # the first update (gradients at identical weights)
        expected, got = ref - init[name], compiled[name] - init[name]
        # a weight of magnitude w is stored to eps * w, so an update read back as the difference of
        # two weights carries up to ~1 ulp per element: tiny updates are compared to that floor
        floor = 4 * eps * max(1.0, float(init[name].abs().max())) * expected.numel() ** 0.5
        diff = float((got - expected).norm())
        assert diff <= 1e-2 * float(expected.norm()) + floor, name
        diffs.append(diff**2)
        norms.append(float(expected.norm()) ** 2)
    assert sum(diffs) ** 0.5 <= 1e-2 * sum(norms) ** 0.5  # the whole update: 1%
