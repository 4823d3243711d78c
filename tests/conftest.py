"""Shared pytest configuration: CPU only (``-m gpu`` aside), deterministic, quiet; launched jobs
never outlive their test.

CUDA is hidden (``CUDA_VISIBLE_DEVICES=""``, unless set by the caller) so that every test runs the
CPU code paths, as CI does. A pytest run whose marker expression selects ``gpu`` tests (``pytest -m
gpu``) leaves CUDA visible; ``gpu`` tests are skipped wherever no CUDA device is visible.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch

from tests.helpers import jobs, prelaunch

os.environ.setdefault("WANDB_MODE", "disabled")


def _selects_gpu_tests(markexpr: str) -> bool:
    """Whether ``-m`` asks for the gpu tests (``gpu``, ``gpu and not slow``; not ``not gpu``)."""
    words = markexpr.replace("(", " ").replace(")", " ").split()
    return any(w == "gpu" and (i == 0 or words[i - 1] != "not") for i, w in enumerate(words))


def pytest_configure(config: pytest.Config) -> None:
    # before any test module is collected, so before CUDA can be initialised
    if not _selects_gpu_tests(config.getoption("markexpr", "") or ""):
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU: run `pytest -m gpu` on a GPU host")
        for item in gpu_items:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    # the prelaunch server imports torch in the background while the first tests run
    if any("prelaunched" in getattr(item, "fixturenames", ()) for item in session.items):
        prelaunch.start_server()


def pytest_sessionfinish(session: pytest.Session) -> None:
    prelaunch.stop_server()


@pytest.fixture(scope="session")
def prelaunched() -> ModuleType:
    """:mod:`tests.helpers.prelaunch` with its server started: launches without import time."""
    prelaunch.start_server()
    return prelaunch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_leftover_jobs() -> Iterator[None]:
    """SIGKILL every job a test launched (and left running, e.g. on failure) when it ends."""
    yield
    jobs.kill_leftovers()
