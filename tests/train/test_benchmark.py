"""``--mode benchmark``: times the training step itself on synthetic tensors and reports img/s."""

from __future__ import annotations

import re

import pytest
from ssd_train.__main__ import main
from ssd_train.benchmark import synthetic_batch
from ssd_train.train_step import TrainStep

TINY = [
    "--model.num-classes",
    "5",
    "--precision",
    "fp32",
    "--data.batch-size",
    "1",
    "--num-threads",
    "2",
]


def test_benchmark_runs_the_train_step_and_reports_images_per_second(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[int] = []
    original = TrainStep.__call__

    def counting(self: TrainStep, micro_batches: list) -> object:
        calls.append(len(micro_batches))
        return original(self, micro_batches)

    monkeypatch.setattr(TrainStep, "__call__", counting)
    args = [*TINY, "--mode", "benchmark", "--benchmark.warmup-steps", "1", "--benchmark.timed-steps", "2",
            "--optim.grad-accumulation-steps", "2"]  # fmt: skip
    assert main(args) == 0
    assert calls == [2, 2, 2]  # 1 warm-up + 2 timed steps, each over 2 micro-batches
    out = capsys.readouterr().out
    found = re.search(r"benchmark: ([0-9.]+) img/s \(2 steps of global batch 2 in ([0-9.]+) s", out)
    assert found, out
    assert float(found.group(1)) == pytest.approx(
        2 * 2 / float(found.group(2)), rel=0.01, abs=0.006
    )
    assert "1x cpu, fp32, compiled=False, channels_last=True" in out


def test_synthetic_batch_follows_the_training_batch_format() -> None:
    import torch

    b = synthetic_batch(3, 10, 81, torch.device("cpu"), boxes_per_image=4, seed=1)
    assert b.images.dtype == torch.uint8 and b.images.shape == (3, 3, 300, 300)
    assert b.boxes.shape == (3, 10, 4) and b.labels.shape == (3, 10)
    valid = b.labels > 0
    assert valid.sum(1).tolist() == [4, 4, 4]
    assert bool((b.labels[valid] < 81).all()) and bool((b.boxes[~valid] == 0).all())
    box = b.boxes[valid]
    assert bool((box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all())
    assert bool((box >= 0).all() and (box <= 1).all())
