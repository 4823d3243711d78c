"""The hyperparameters an MLPerf SSD log states, and the closed-division rules they must meet.

Split from :mod:`ssd_train.report.mlperf_log` (which re-exports these names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ssd_train.report.config import Division

CLOSED_TARGET_MAP = 0.23


@dataclass(frozen=True)
class MLPerfHyperparameters:
    """The run's hyperparameters as the closed SSD rules want them logged.

    `model_bn_span` is the number of images one BatchNorm normalises over (bn_group x per-rank
    micro-batch; per-rank batch for plain BN); `max_samples` is the crop attempts per draw (1 as
    NVIDIA, 50 as the reference); `decay_boundary_epochs` are 0-based epochs at whose start the
    learning rate is multiplied by `decay_factor`.
    """

    seed: int
    global_batch_size: int
    model_bn_span: int
    base_learning_rate: float
    weight_decay: float
    warmup_steps: int
    warmup_factor: float
    decay_boundary_epochs: Sequence[int]
    max_samples: int
    gradient_accumulation_steps: int = 1
    decay_factor: float = 0.1


def closed_rule_violations(hp: MLPerfHyperparameters, target_map: float) -> list[str]:
    """Reasons why a run with these settings cannot pass the closed SSD rules (empty if it can).

    These are the value checks of `training_{0.7.0,1.0.0}/closed_ssd.yaml` and the target.
    """
    problems = []
    if target_map < CLOSED_TARGET_MAP:
        problems.append(f"target mAP {target_map} < {CLOSED_TARGET_MAP}")
    if hp.model_bn_span < 1:
        problems.append(f"model_bn_span {hp.model_bn_span} < 1")
    if hp.warmup_factor < 0:
        problems.append(f"warm-up factor {hp.warmup_factor} < 0")
    if hp.warmup_steps < 1:
        problems.append(f"warm-up steps {hp.warmup_steps} < 1 (closed SSD requires a warm-up)")
    if hp.max_samples not in (1, 50):
        problems.append(f"max_samples (crop attempts) {hp.max_samples} is not 1 or 50")
    if hp.gradient_accumulation_steps < 1:
        problems.append(f"gradient_accumulation_steps {hp.gradient_accumulation_steps} < 1")
    b = list(hp.decay_boundary_epochs)

    def _k(value: float, base: float) -> bool:
        k = 10 * (value / base - 1)
        return abs(round(k) - k) < 1e-5

    if len(b) != 2 or not (_k(b[0], 40.0) and _k(b[1], 50.0)):
        problems.append(f"decay boundary epochs {b} are not [40, 50] x (1 + k/10)")
    return problems


def resolve_division(
    requested: Literal["auto", "closed", "open"],
    *,
    real_dataset: bool,
    hp: MLPerfHyperparameters,
    target_map: float,
) -> Division:
    """The division to log (interfaces.md): closed for real runs, open for short/synthetic ones.

    'auto' gives closed only on a real dataset with settings that can pass the closed rules.
    An explicit 'closed' whose settings cannot pass raises ValueError naming the reasons.
    """
    violations = closed_rule_violations(hp, target_map)
    if requested == "closed" and violations:
        raise ValueError(
            "logging.mlperf.division=closed, but these settings cannot pass the closed SSD "
            f"rules: {'; '.join(violations)}. Fix them or use division 'open' or 'auto'."
        )
    if requested == "auto":
        return "closed" if real_dataset and not violations else "open"
    return requested
