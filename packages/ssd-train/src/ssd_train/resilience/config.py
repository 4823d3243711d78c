"""Settings of the resilience components: stop requests, watchdog, non-finite loss, faults.

`Settings.resilience` is :class:`ResilienceConfig` (preemption, watchdog, non-finite policy,
test-only fault injection). From the command line they read e.g.
``--resilience.watchdog.factor 20``; from the environment
``SSD_RESILIENCE__FAULTS__NAN_LOSS_AT_STEP=7``.
Process-group timeouts live in the trainer's ``distributed`` section (``init_timeout_s``,
``timeout_s``); :func:`ssd_train.distributed.set_collective_timeout` switches between them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ssd_train.trainer_config import SettingsSection, subsection


class PreemptionConfig(SettingsSection):
    """Stop requests (SIGTERM, SIGUSR1, or the file <run dir>/STOP): checkpoint, requeue, exit 0."""

    check_every_steps: int = Field(
        10,
        ge=1,
        description="Ranks agree on a stop request (one all-reduce of a flag, one host sync) every"
        " this many steps; a signal is acted on at most this many steps late.",
    )
    stop_file: str = Field(
        "STOP",
        min_length=1,
        description="Name of the stop file inside the run folder (deleted when acted on).",
    )
    handle_signals: bool = Field(
        True,
        description="Install SIGTERM/SIGUSR1 handlers in every worker (a second signal exits at once).",
    )


class WatchdogConfig(SettingsSection):
    """Stuck-step reporter: dumps every thread's stack when a step takes far longer than usual."""

    enabled: bool = Field(True, description="Run the step watchdog thread on every rank.")
    factor: float = Field(
        20.0,
        gt=1,
        description="Report when a step runs longer than factor x the running median step time.",
    )
    floor_s: float = Field(
        120.0,
        gt=0,
        description="... and longer than this many seconds (never report faster steps).",
    )
    warmup_steps: int = Field(
        5,
        ge=1,
        description="Steps measured before the watchdog arms (compilation makes the first ones slow).",
    )
    window: int = Field(50, ge=1, description="Steps in the running median.")
    poll_s: float = Field(
        1.0, gt=0, description="How often the watchdog thread looks at the clock."
    )


class NonFiniteConfig(SettingsSection):
    """What to do when the loss is NaN or infinite (detected on the device, read on check steps)."""

    policy: Literal["stop", "skip"] = Field(
        "stop",
        description="stop: end the run with a message naming the step and the last checkpoint;"
        " skip: leave the weights untouched for that step and count it.",
    )
    max_skipped: int = Field(
        100, ge=0, description="With policy skip: stop anyway after this many skipped steps."
    )


class FaultInjectionConfig(SettingsSection):
    """TEST-ONLY fault injection, used by tests/train to prove the recovery paths. Leave unset."""

    nan_loss_at_step: int | None = Field(
        None, ge=0, description="Test only: make the loss NaN at this optimiser step (every rank)."
    )
    exit_at_step: int | None = Field(
        None,
        ge=0,
        description="Test only: the process of rank fault_rank exits at once (code 13) at this step.",
    )
    sleep_at_step: int | None = Field(
        None, ge=0, description="Test only: rank `fault_rank` sleeps `sleep_s` inside this step."
    )
    sleep_s: float = Field(30.0, gt=0, description="Test only: length of the injected sleep.")
    fault_rank: int = Field(0, ge=0, description="Test only: the rank the exit/sleep faults hit.")
    once: bool = Field(
        True,
        description="Test only: fire each exit/sleep fault once per run folder (a marker file"
        " <run dir>/fault-<kind>-rank<k>.fired), so a restarted group runs through.",
    )


class ResilienceConfig(SettingsSection):
    """Preemption, watchdog, non-finite-loss policy and test-only fault injection."""

    preemption: PreemptionConfig = subsection(PreemptionConfig, "Stop requests.")
    watchdog: WatchdogConfig = subsection(WatchdogConfig, "Stuck-step watchdog.")
    nonfinite: NonFiniteConfig = subsection(NonFiniteConfig, "Non-finite loss.")
    faults: FaultInjectionConfig = subsection(FaultInjectionConfig, "Test-only fault injection.")
