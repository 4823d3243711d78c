"""Fixtures of tests/train: launched jobs never outlive their test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import _jobs


@pytest.fixture(autouse=True)
def _no_leftover_jobs() -> Iterator[None]:
    """SIGKILL every job a test launched (and left running, e.g. on failure) when it ends."""
    yield
    _jobs.kill_leftovers()
