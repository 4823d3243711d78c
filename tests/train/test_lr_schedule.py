"""LR schedule (spec 5.1): NVIDIA's rounded base LR, warm-up from 0, step decay; eval epochs."""

from __future__ import annotations

import pytest
import torch
from ssd_train.config import ScheduleConfig
from ssd_train.lr_schedule import LRSchedule, base_learning_rate


@pytest.mark.parametrize(
    ("lr_per_32", "global_batch", "expected"),
    [
        (3.2e-3, 912, 0.09),  # DGX A100 8x114: 1.28 * 28.5 = 36.48 -> 36 * 2.5e-3
        (2.92e-3, 960, 0.0875),  # DGX-1 8x120: 1.168 * 30 = 35.04 -> 35
        (3.2e-3, 896, 0.09),  # DGX-2 16x56: 1.28 * 28 = 35.84 -> 36
        (2.9e-3, 1536, 0.14),  # DGX-2 4x16x24: 1.16 * 48 = 55.68 -> 56
        (2.5e-3, 1024, 0.08),  # reference: 2.5e-3 * 1024 / 32
        (2.5e-3, 8, 2.5e-3),  # 0.25 rounds to 0: at least one quantum
        (0.04, 8, 0.01),  # CPU default job: 16 * 0.25 = 4 quanta
    ],
)
def test_base_learning_rate_matches_nvidia_rounding(
    lr_per_32: float, global_batch: int, expected: float
) -> None:
    assert base_learning_rate(lr_per_32, global_batch) == pytest.approx(expected, abs=1e-12)


def test_base_learning_rate_rejects_empty_batch() -> None:
    with pytest.raises(ValueError, match="global batch"):
        base_learning_rate(2.5e-3, 0)


def test_warmup_and_decay_values_at_chosen_iterations() -> None:
    # DGX A100 recipe with 100 steps per epoch (a round number to compute by hand)
    s = LRSchedule(base_lr=0.09, steps_per_epoch=100, warmup_iterations=650, decay_epochs=[44, 55])
    assert s(0) == 0.0  # warm-up starts at exactly 0
    assert s(1) == pytest.approx(0.09 / 650)
    assert s(325) == pytest.approx(0.045)
    assert s(649) == pytest.approx(0.09 * 649 / 650)
    assert s(650) == pytest.approx(0.09)
    assert s(4399) == pytest.approx(0.09)  # last step of 0-based epoch 43
    assert s(4400) == pytest.approx(0.009)  # first step of epoch 44
    assert s(5499) == pytest.approx(0.009)
    assert s(5500) == pytest.approx(0.0009)  # epoch 55
    assert s(7999) == pytest.approx(0.0009)


def test_warmup_factor_follows_reference_formula() -> None:
    # lr = base - (W - it) * base / (W * 2**f): f = 1 starts at half the base LR
    s = LRSchedule(base_lr=0.08, steps_per_epoch=10, warmup_iterations=300, warmup_factor=1.0)
    assert s(0) == pytest.approx(0.04)
    assert s(150) == pytest.approx(0.08 - 150 * 0.08 / 600)
    assert s(300) == pytest.approx(0.08)


def test_no_warmup_means_base_lr_from_the_start() -> None:
    s = LRSchedule(base_lr=0.01, steps_per_epoch=5, warmup_iterations=0)
    assert s(0) == pytest.approx(0.01)


def test_apply_sets_every_group_including_tensor_lrs() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1]}, {"params": [p2], "lr": torch.tensor(0.5)}], lr=1.0)
    s = LRSchedule(base_lr=0.1, steps_per_epoch=10, warmup_iterations=10)
    assert s.apply(opt, 5) == pytest.approx(0.05)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert isinstance(opt.param_groups[1]["lr"], torch.Tensor)
    assert float(opt.param_groups[1]["lr"]) == pytest.approx(0.05)


def test_evaluation_epochs_v07_schedule() -> None:
    sch = ScheduleConfig(eval_epochs=[40, 50, 55], eval_interval=5, max_epochs=80)
    evals = [e for e in range(1, 81) if sch.is_eval_epoch(e)]
    assert evals == [40, 50, 55, 60, 65, 70, 75, 80]
    only_listed = ScheduleConfig(eval_epochs=[3, 7], eval_interval=0)
    assert [e for e in range(1, 20) if only_listed.is_eval_epoch(e)] == [3, 7]


def test_schedule_rejects_unsorted_epochs() -> None:
    with pytest.raises(ValueError, match="decay_epochs must be strictly increasing"):
        ScheduleConfig(decay_epochs=[55, 44])
