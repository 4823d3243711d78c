"""Shared pytest configuration: CPU only, deterministic, quiet; launched jobs never outlive their test."""

from __future__ import annotations

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("WANDB_MODE", "disabled")

from collections.abc import Iterator

import pytest
import torch

from tests.helpers import jobs


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_leftover_jobs() -> Iterator[None]:
    """SIGKILL every job a test launched (and left running, e.g. on failure) when it ends."""
    yield
    jobs.kill_leftovers()
