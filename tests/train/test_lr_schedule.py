"""LR schedule (spec 5.1): NVIDIA's rounded base LR, warm-up from 0, no reset after it, decay at
NVIDIA's iterations; eval epochs. Golden values: NVIDIA's DGX A100 v0.7 run (8 x 114, 117,266
images, base LR 0.09, 650 warm-up iterations, decay epochs 44 and 55 starting at iterations 5658
and 7072 in its log)."""

from __future__ import annotations

import pytest
import torch
from ssd_data.sampler import EpochClock
from ssd_train.lr_schedule import LRSchedule, base_learning_rate, decay_steps_from_epochs
from ssd_train.trainer_config import ScheduleConfig

NVIDIA_DECAY_ITERATIONS = (5658, 7072)  # epoch_start current_iter_num of 1-based epochs 45, 56


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


def test_nvidia_dgxa100_lr_at_chosen_iterations() -> None:
    s = LRSchedule(
        base_lr=0.09, warmup_iterations=650, decay_steps=NVIDIA_DECAY_ITERATIONS, decay_factor=0.1
    )
    assert s(0) == 0.0  # warm-up starts at exactly 0
    assert s(1) == pytest.approx(0.09 / 650, rel=1e-12)
    assert s(325) == pytest.approx(0.045, rel=1e-12)
    held = 0.0898615384615  # 0.09 * 649 / 650: NVIDIA never resets the LR after warm-up
    for it in (649, 650, 651, 5000, 5657):
        assert s(it) == pytest.approx(held, abs=1e-13), it
    assert s(5658) == pytest.approx(0.009, rel=1e-12)  # first iteration of 0-based epoch 44
    assert s(7071) == pytest.approx(0.009, rel=1e-12)
    assert s(7072) == pytest.approx(0.0009, rel=1e-12)  # epoch 55
    assert s(10_000) == pytest.approx(0.0009, rel=1e-12)


def test_decay_steps_from_nvidia_epoch_clock() -> None:
    clock = EpochClock(shard_size=117266 // 8, batch_size=114)
    assert decay_steps_from_epochs(clock.epoch_start_batch, [44, 55]) == NVIDIA_DECAY_ITERATIONS
    # the same global batch as 8 x (2 micro-batches of 57): epoch 44 starts at micro-batch
    # ceil(44 * 14658 / 57) = 11315, i.e. optimiser step ceil(11315 / 2) = 5658; 55: 14144 -> 7072
    micro = EpochClock(shard_size=117266 // 8, batch_size=57)
    assert decay_steps_from_epochs(micro.epoch_start_batch, [44, 55], 2) == (5658, 7072)
    with pytest.raises(ValueError, match="grad_accumulation_steps"):
        decay_steps_from_epochs(clock.epoch_start_batch, [44], 0)


def test_decay_inside_warmup_scales_the_warmup() -> None:
    s = LRSchedule(base_lr=0.1, warmup_iterations=10, decay_steps=[5])
    assert s(4) == pytest.approx(0.1 * 4 / 10)
    assert s(5) == pytest.approx(0.1 * 5 / 10 * 0.1)
    assert s(10) == pytest.approx(0.01)  # decayed once, warm-up over


def test_warmup_factor_follows_reference_formula() -> None:
    # lr = base - (W - it) * base / (W * 2**f): f = 1 starts at half the base LR
    s = LRSchedule(base_lr=0.08, warmup_iterations=300, warmup_factor=1.0, decay_steps=[1000])
    assert s(0) == pytest.approx(0.04)
    assert s(150) == pytest.approx(0.08 - 150 * 0.08 / 600)
    held = 0.08 - 0.08 / 600  # the value of iteration 299, kept until the decay
    assert s(299) == s(300) == s(999) == pytest.approx(held)
    assert s(1000) == pytest.approx(0.008)


def test_no_warmup_means_base_lr_from_the_start() -> None:
    s = LRSchedule(base_lr=0.01, warmup_iterations=0, decay_steps=[3])
    assert s(0) == s(2) == pytest.approx(0.01)
    assert s(3) == pytest.approx(0.001)


def test_apply_sets_every_group_including_tensor_lrs() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1]}, {"params": [p2], "lr": torch.tensor(0.5)}], lr=1.0)
    s = LRSchedule(base_lr=0.1, warmup_iterations=10)
    assert s.apply(opt, 5) == pytest.approx(0.05)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert isinstance(opt.param_groups[1]["lr"], torch.Tensor)
    assert float(opt.param_groups[1]["lr"]) == pytest.approx(0.05)


def test_state_dict_lists_the_parameters() -> None:
    s = LRSchedule(base_lr=0.09, warmup_iterations=650, decay_steps=(7072, 5658))
    assert s.state_dict() == {
        "base_lr": 0.09,
        "warmup_iterations": 650,
        "warmup_factor": 0.0,
        "decay_steps": [5658, 7072],
        "decay_factor": 0.1,
    }
    with pytest.raises(ValueError, match="decay_steps"):
        LRSchedule(base_lr=0.1, decay_steps=[-1])


def test_evaluation_epochs_v07_schedule() -> None:
    # NVIDIA v0.7: evaluate after epochs 40, 50, 55, ..., 75 of an 80-epoch limit, never after 80
    nvidia = ScheduleConfig(
        eval_epochs=[40, 50, 55, 60, 65, 70, 75], eval_interval=0, max_epochs=80
    )
    assert [e for e in range(1, 81) if nvidia.is_eval_epoch(e)] == [40, 50, 55, 60, 65, 70, 75]
    sch = ScheduleConfig(eval_epochs=[40, 50, 55], eval_interval=5, max_epochs=80)
    evals = [e for e in range(1, 81) if sch.is_eval_epoch(e)]
    assert evals == [40, 50, 55, 60, 65, 70, 75, 80]
    only_listed = ScheduleConfig(eval_epochs=[3, 7], eval_interval=0)
    assert [e for e in range(1, 20) if only_listed.is_eval_epoch(e)] == [3, 7]


def test_schedule_rejects_unsorted_epochs() -> None:
    with pytest.raises(ValueError, match="decay_epochs must be strictly increasing"):
        ScheduleConfig(decay_epochs=[55, 44])
