"""Pointing a real offline wandb run at a test's temporary folder only."""

from __future__ import annotations

from pathlib import Path

import pytest


def isolate_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No account, no netrc, no mode forced from outside, and every wandb folder under
    ``tmp_path``: an offline run writes nothing outside the test."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "home" / var))
