"""CUDA branches that CPU runs cannot reach (``pytest -m gpu`` on a GPU host; skipped elsewhere):
the device input path's side stream, pinned collate and one prefetched batch, across a resume;
and the real ``Trainer`` on CUDA, resumed mid-epoch."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from ssd_data.config import DataConfig
from ssd_data.pipeline import build_train_loader

from tests.helpers.datasets import make_coco
from tests.helpers.states import assert_states_equal
from tests.helpers.trainer_runs import clear_ssd_environment, run_trainer

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_coco(root, "train2017", num_images=24, num_empty=0, seed=0, size_range=(60, 400))
    return root


def _cfg(root: Path, **kw: object) -> DataConfig:
    base = {"root": root, "batch_size": 3, "num_workers": 2, "max_boxes": 8}
    return DataConfig(**{**base, **kw})  # type: ignore[arg-type]


def _take(loader, n: int) -> list:  # type: ignore[no-untyped-def]
    batches = list(itertools.islice(iter(loader), n))
    loader.close()
    return batches


def test_device_path_resumed_with_a_batch_prefetched_gives_the_same_batches(root: Path) -> None:
    """3 batches taken (a 4th already prefetched on the side stream), state saved, a new loader
    resumed: the batches from there on are the uninterrupted loader's, on the GPU."""
    cfg = _cfg(root, augment_device="cuda")
    full = _take(build_train_loader(cfg, 0, 1, 21, "cuda"), 8)  # 24 images: one epoch
    first = build_train_loader(cfg, 0, 1, 21, "cuda")
    it = iter(first)
    seen = [next(it) for _ in range(3)]
    torch.cuda.synchronize()
    state = first.state_dict()
    first.close()
    resumed = build_train_loader(cfg, 0, 1, 21, "cuda")
    resumed.load_state_dict(state)
    rest = _take(resumed, 5)
    assert all(b.images.device.type == "cuda" for b in seen + rest)
    assert all(b.images.is_contiguous(memory_format=torch.channels_last) for b in seen + rest)
    for a, b in zip(seen + rest, full, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x.cpu(), y.cpu())


def test_trainer_on_cuda_resumed_mid_epoch_ends_in_the_same_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_ssd_environment(monkeypatch)
    cache, saves = tmp_path / "cache", ("--checkpoint.enabled", "true", "--device", "cuda")
    whole = run_trainer(tmp_path / "whole", cache, "--schedule.max-steps", "5", *saves,
                        keep_state=True)  # fmt: skip
    run_trainer(tmp_path / "cut", cache, "--schedule.max-steps", "3", *saves)
    resumed = run_trainer(tmp_path / "cut", cache, "--schedule.max-steps", "5", *saves,
                          keep_state=True)  # fmt: skip
    assert resumed.outcome.steps == whole.outcome.steps == 5
    assert whole.state is not None and resumed.state is not None
    for part in ("data", "progress", "schedule"):  # integers and RNG bytes: exact
        assert_states_equal(resumed.state[part], whole.state[part], part)
    # weights, momenta and the (tiny) scores: to float tolerance (CUDA atomics)
    assert_states_equal(resumed.state, whole.state, rtol=1e-4)
