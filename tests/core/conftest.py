"""Fixtures of the ssd_core tests (the reference transcriptions: tests/helpers/mlperf_reference.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
