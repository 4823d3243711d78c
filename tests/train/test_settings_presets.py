"""Every preset in infra/configs resolves through the settings loader with the values of spec 5.2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ssd_train.lr_schedule import base_learning_rate
from ssd_train.run_setup import mlperf_division, mlperf_hyperparameters
from ssd_train.settings import load_settings

CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "configs"

# spec 5.2 (NV07 config_*.sh, logged values from NV07res), typed in by hand:
# preset: (ranks, batch/GPU, --lr, logged base LR, warm-up iterations, weight decay, eval batch)
SPEC_5_2 = {
    "dgx1": (8, 120, 2.92e-3, 0.0875, 650, 1.6e-4, 160),
    "dgx2": (16, 56, 3.2e-3, 0.09, 650, 1.3e-4, 160),
    "dgx2_multi_4x16x24": (64, 24, 2.9e-3, 0.14, 850, 1.7e-4, 40),
    "dgxa100": (8, 114, 3.2e-3, 0.09, 650, 1.3e-4, 32),
    "dgxa100_multi_2x8x56": (16, 56, 3.2e-3, 0.09, 650, 1.3e-4, 160),
    # our own, not validated by a run: the DGX A100 recipe
    "dgxh100": (8, 114, 3.2e-3, 0.09, 650, 1.3e-4, 32),
    "dgxh200": (8, 114, 3.2e-3, 0.09, 650, 1.3e-4, 32),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SSD_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("name", sorted(SPEC_5_2))
def test_mlperf_preset_has_the_submission_values(name: str) -> None:
    ranks, batch, lr, logged_lr, warmup, wd, eval_batch = SPEC_5_2[name]
    s = load_settings(["--config", str(CONFIGS / f"{name}.toml")])
    assert s.data.batch_size == batch
    assert s.data.eval_batch_size == eval_batch
    assert s.optim.lr_per_32 == lr
    assert base_learning_rate(s.optim.lr_per_32, s.global_batch_size(ranks)) == pytest.approx(
        logged_lr, abs=1e-12
    )
    assert s.schedule.warmup_iterations == warmup and s.schedule.warmup_factor == 0
    assert s.optim.weight_decay == wd and s.optim.momentum == 0.9
    assert s.schedule.decay_epochs == [44, 55] and s.schedule.decay_factor == 0.1
    assert s.schedule.max_epochs == 80 and s.schedule.target_map == 0.23
    assert [e for e in range(1, 81) if s.schedule.is_eval_epoch(e)] == [
        40,
        50,
        55,
        60,
        65,
        70,
        75,
    ]  # NVIDIA v0.7: never after the 80th epoch
    # MLPerf form: decay on every parameter, no clipping, no accumulation, one crop attempt
    assert not s.optim.exclude_bn_and_bias_from_weight_decay
    assert s.optim.grad_clip_norm is None and s.optim.grad_accumulation_steps == 1
    assert s.data.crop_attempts == 1 and s.data.max_boxes >= 93  # COCO's most crowded image
    assert s.model.backbone_weights == "imagenet" and s.model.num_classes == 81
    # timed runs: no periodic or evaluation checkpoints
    assert s.checkpoint.every_steps is None and s.checkpoint.at_eval_epochs is False
    assert s.precision == "bf16" and s.compile is True and s.channels_last is True
    global_batch = s.global_batch_size(ranks)
    base_lr = base_learning_rate(s.optim.lr_per_32, global_batch)
    hp = mlperf_hyperparameters(s, seed=1, global_batch=global_batch, base_lr=base_lr)
    assert hp.global_batch_size == ranks * batch and hp.model_bn_span == batch
    assert mlperf_division(s, hp, synthetic_data=False) == "closed"
    assert mlperf_division(s, hp, synthetic_data=True) == "open"


def test_cpu_preset_is_the_default_job() -> None:
    preset = load_settings(["--config", str(CONFIGS / "cpu.toml")])
    defaults = load_settings([])
    assert preset.model_dump(exclude={"config"}) == defaults.model_dump(exclude={"config"})
    assert defaults.data.root is None  # synthetic dataset
    assert defaults.optim.grad_clip_norm is not None
    assert base_learning_rate(defaults.optim.lr_per_32, defaults.data.batch_size) == pytest.approx(
        0.02
    )


def test_every_preset_file_is_covered() -> None:
    assert {p.stem for p in CONFIGS.glob("*.toml")} == {*SPEC_5_2, "cpu"}
