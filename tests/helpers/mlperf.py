"""MLPerf hyperparameters of a real submission, for the log and compliance tests."""

from __future__ import annotations

from ssd_train.report.mlperf_log import MLPerfHyperparameters

NVIDIA_DGXA100 = MLPerfHyperparameters(
    seed=42,
    global_batch_size=912,
    model_bn_span=114,
    base_learning_rate=0.09,
    weight_decay=1.3e-4,
    warmup_steps=650,
    warmup_factor=0.0,
    decay_boundary_epochs=[44, 55],
    max_samples=1,
)
"""NVIDIA's v0.7 DGX A100 SSD submission (closed rules accept it)."""
