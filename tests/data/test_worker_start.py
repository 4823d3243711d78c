"""Process workers never fork a parent that has CUDA, and the loader's pieces survive the
pickling that forkserver/spawn need."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
import torch
from ssd_data.config import DataConfig
from ssd_data.pipeline import build_train_loader, worker_start_method

from tests.helpers.datasets import make_coco


def test_a_parent_with_cuda_never_forks(caplog: pytest.LogCaptureFixture) -> None:
    assert worker_start_method(None, cuda_in_parent=False) is None  # the platform's default
    assert worker_start_method("fork", cuda_in_parent=False) == "fork"
    assert worker_start_method(None, cuda_in_parent=True) == "forkserver"
    assert worker_start_method("spawn", cuda_in_parent=True) == "spawn"
    with caplog.at_level(logging.WARNING, logger="ssd_data"):
        assert worker_start_method("fork", cuda_in_parent=True) == "forkserver"
    assert "multiprocessing_context=fork" in caplog.text


def test_forkserver_workers_give_the_batches_of_thread_workers(tmp_path: Path) -> None:
    make_coco(tmp_path, "train2017", num_images=8, num_empty=0, seed=4)
    batches = {}
    for kind, start in (("thread", None), ("process", "forkserver")):
        cfg = DataConfig(
            root=tmp_path,
            batch_size=4,
            num_workers=2,
            max_boxes=8,
            augment_device="cuda",  # the device path's map function and collate, on the CPU
            worker_type=kind,  # type: ignore[arg-type]
            multiprocessing_context=start,  # type: ignore[arg-type]
        )
        loader = build_train_loader(cfg, 0, 1, 3, "cpu")
        batches[kind] = list(itertools.islice(iter(loader), 2))
        loader.close()
    for a, b in zip(batches["thread"], batches["process"], strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
