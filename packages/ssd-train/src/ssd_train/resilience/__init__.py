"""Surviving preemption and faults: stop requests (``preemption``), the stuck-step ``watchdog``,
the non-finite-loss policy (``nonfinite``) and test-only ``fault_injection``."""
