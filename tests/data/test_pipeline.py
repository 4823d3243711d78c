"""Train/eval loaders: fixed shapes, determinism, sharding, epochs, exact resume.

The training stream across epoch boundaries (straddling batches, NVIDIA's epoch clock) is
tested in test_epoch_stream.py."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from ssd_data.coco import CocoIndex
from ssd_data.config import DataConfig
from ssd_data.errors import DataError
from ssd_data.pipeline import TrainLoader, build_eval_loader, build_train_loader
from ssd_data.sampler import epoch_permutation

from tests.helpers.datasets import make_coco

NUM_TRAIN, EMPTY = 26, 2  # 24 annotated training images


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_coco(root, "train2017", num_images=NUM_TRAIN, num_empty=EMPTY, seed=0)
    make_coco(root, "val2017", num_images=11, num_empty=3, seed=1)
    return root


def _cfg(root: Path, **kw) -> DataConfig:
    base = {"root": root, "batch_size": 4, "eval_batch_size": 3, "num_workers": 2, "max_boxes": 8}
    return DataConfig(**{**base, **kw})


_OPEN: list[TrainLoader] = []


@pytest.fixture(autouse=True)
def _close_train_loaders() -> Iterator[None]:
    """The training stream is endless: stop each test's worker threads/processes after it."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _train(cfg: DataConfig, rank: int, world_size: int, seed: int) -> TrainLoader:
    loader = build_train_loader(cfg, rank, world_size, seed)
    _OPEN.append(loader)
    return loader


def _take(loader, n: int) -> list:
    """The next ``n`` batches of the loader's endless stream."""
    return list(itertools.islice(iter(loader), n))


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for fx, fy in zip(x, y, strict=True):
            torch.testing.assert_close(fx, fy, rtol=0, atol=0)


def test_train_batch_shapes_and_contents(root: Path) -> None:
    loader = _train(_cfg(root), rank=0, world_size=1, seed=3)
    assert loader.num_samples == loader.shard_size == NUM_TRAIN - EMPTY
    assert loader.batch_size == 4
    batches = _take(loader, 6)  # epoch 0: 24 images = 6 batches of 4
    assert loader.batches_done == 6
    index = CocoIndex.from_json(root / "annotations/instances_train2017.json", skip_empty=True)
    for b in batches:
        assert b.images.shape == (4, 3, 300, 300) and b.images.dtype == torch.uint8
        assert b.boxes.shape == (4, 8, 4) and b.boxes.dtype == torch.float32
        assert b.labels.shape == (4, 8) and b.labels.dtype == torch.int64
        assert b.image_ids.dtype == torch.int64
        valid = b.labels > 0
        assert torch.all(b.boxes[~valid] == 0)
        assert torch.all((b.boxes[valid] >= 0) & (b.boxes[valid] <= 1))
        assert torch.all(b.boxes[valid][:, 2:] > b.boxes[valid][:, :2])
        assert set(b.labels[valid].tolist()) <= {1, 2, 3}
        assert b.images.is_contiguous(memory_format=torch.channels_last)
        for k, image_id in enumerate(b.image_ids.tolist()):
            i = [index.image_id(j) for j in range(index.num_images)].index(image_id)
            # Every kept box comes from the image's own labels (crop/flip only remove boxes).
            assert set(b.labels[k][b.labels[k] > 0].tolist()) <= set(
                index.annotations(i)[1].tolist()
            )
    ids = torch.cat([b.image_ids for b in batches]).tolist()
    assert len(set(ids)) == len(ids)
    moved = batches[0].to("cpu", non_blocking=True)
    assert type(moved).__name__ == "TrainBatch" and moved.images.shape == (4, 3, 300, 300)
    contiguous = _train(_cfg(root, channels_last=False), 0, 1, seed=3)
    first = next(iter(contiguous))
    assert first.images.is_contiguous()
    torch.testing.assert_close(first.images, batches[0].images, rtol=0, atol=0)


def test_deterministic_and_independent_of_workers(root: Path) -> None:
    reference = _take(_train(_cfg(root, num_workers=0), 0, 1, seed=5), 8)
    _same(reference, _take(_train(_cfg(root, num_workers=3), 0, 1, seed=5), 8))
    other_seed = _take(_train(_cfg(root), 0, 1, seed=6), 8)
    assert not torch.equal(
        torch.cat([b.image_ids for b in reference]), torch.cat([b.image_ids for b in other_seed])
    )


def test_process_workers_give_the_same_batches(root: Path) -> None:
    # 12 images per rank and epoch, 3 batches: 5 batches reach into epoch 1
    threads = _take(_train(_cfg(root, num_workers=2), 0, 2, seed=9), 5)
    processes = _train(_cfg(root, num_workers=2, worker_type="process"), 0, 2, seed=9)
    _same(threads, _take(processes, 5))
    processes.close()


def test_epochs_reshuffle_from_the_seed(root: Path) -> None:
    loader = _train(_cfg(root, batch_size=2), 0, 1, seed=11)
    index = CocoIndex.from_json(root / "annotations/instances_train2017.json", skip_empty=True)
    all_ids = [index.image_id(i) for i in range(index.num_images)]
    ids = torch.cat([b.image_ids for b in _take(loader, 24)]).tolist()  # epochs 0 and 1
    orders = [ids[:24], ids[24:]]
    for epoch, order in enumerate(orders):
        assert order == [all_ids[i] for i in epoch_permutation(len(all_ids), 11, epoch)]
        assert sorted(order) == sorted(all_ids)
    assert orders[0] != orders[1]
    again = _train(_cfg(root, batch_size=2, num_workers=0), 0, 1, seed=11)
    assert torch.cat([b.image_ids for b in _take(again, 12)]).tolist() == orders[0]


def test_ranks_are_disjoint_and_cover_the_epoch(root: Path) -> None:
    world, per_rank_ids = 3, []
    for rank in range(world):
        loader = _train(_cfg(root, batch_size=2), rank, world, seed=4)
        assert loader.shard_size == 24 // 3 and loader.epoch_start_batch(2) == 8
        epoch_2 = _take(loader, 12)[8:]  # 0-based epoch 2: batches 8..11
        per_rank_ids.append(torch.cat([b.image_ids for b in epoch_2]).tolist())
    flat = [i for ids in per_rank_ids for i in ids]
    assert len(flat) == len(set(flat)) == 24  # disjoint, and 24 = 3 ranks x 4 steps x 2 covers all


@pytest.mark.parametrize("interrupt_after", [1, 3])
def test_resume_is_exact(root: Path, interrupt_after: int) -> None:
    cfg = _cfg(root, batch_size=2)
    full = _take(_train(cfg, 1, 2, seed=21), 8)  # 6 batches per epoch: into epoch 1
    first = _train(cfg, 1, 2, seed=21)
    seen = _take(first, interrupt_after)
    state = first.state_dict()
    first.close()
    assert state["version"] == 2 and state["batches_done"] == interrupt_after
    assert "epoch" not in state
    # New loader, other worker settings: state holds positions, not pipeline snapshots.
    resumed = _train(_cfg(root, batch_size=2, num_workers=1, prefetch=3), 1, 2, seed=21)
    resumed.load_state_dict(state)
    rest = _take(resumed, 8 - interrupt_after)
    _same(seen + rest, full)
    assert resumed.stats()["images"] == 2 * len(full)
    resumed.close()


def test_resume_refuses_another_seed_batch_size_or_world_size(root: Path) -> None:
    loader = _train(_cfg(root, batch_size=2), 0, 2, seed=1)
    _take(loader, 2)
    state = loader.state_dict()
    loader.close()
    with pytest.raises(DataError, match=r"seed=1 but this run has seed=2"):
        _train(_cfg(root, batch_size=2), 0, 2, seed=2).load_state_dict(state)
    with pytest.raises(DataError, match=r"world_size=2 but this run has world_size=1"):
        _train(_cfg(root, batch_size=2), 0, 1, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match=r"batch_size=2 but this run has batch_size=3"):
        _train(_cfg(root, batch_size=3), 0, 2, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match=r"num_samples=20 but this run has num_samples=24"):
        _train(_cfg(root, batch_size=2), 0, 2, seed=1).load_state_dict({**state, "num_samples": 20})
    old = {"version": 1, "epoch": 3, "batches_done": 2, "batch_size": 2, "world_size": 2}
    with pytest.raises(DataError, match=r"version 1.*start a new run"):
        _train(_cfg(root, batch_size=2), 0, 2, seed=1).load_state_dict(old)


def test_extra_boxes_are_dropped_counted_and_logged(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loader = _train(_cfg(root, max_boxes=1, batch_size=2), 0, 1, seed=0)
    with caplog.at_level(logging.WARNING, logger="ssd_data"):
        batches = _take(loader, 12)
    assert all(b.labels.shape == (2, 1) for b in batches)
    dropped = loader.stats()["dropped_boxes"]
    assert dropped > 0
    assert "beyond data.max_boxes dropped" in caplog.text and ".jpg" in caplog.text


def test_eval_loader_shards_sizes_and_all_images(root: Path) -> None:
    index = CocoIndex.from_json(root / "annotations/instances_val2017.json", skip_empty=False)
    seen: dict[int, list[int]] = {}
    for rank in range(2):
        loader = build_eval_loader(_cfg(root), rank, 2)
        assert loader.num_samples == 8  # 11 val images, 3 without annotations
        batches = list(loader)
        assert len(batches) == len(loader) and batches[-1].images.shape[0] <= 3
        for b in batches:
            assert b.images.dtype == torch.uint8 and b.images.shape[1:] == (3, 300, 300)
            for image_id, (h, w) in zip(b.image_ids.tolist(), b.sizes.tolist(), strict=True):
                i = [index.image_id(j) for j in range(index.num_images)].index(image_id)
                assert (h, w) == index.image_size(i)
                seen.setdefault(image_id, []).append(rank)
    assert len(seen) == 8 and all(len(r) == 1 for r in seen.values())
    everything = build_eval_loader(_cfg(root, eval_all_images=True), 0, 1)
    ids = torch.cat([b.image_ids for b in everything]).tolist()
    assert everything.num_samples == 11 and ids == list(range(1000, 1011))


def test_eval_images_are_the_resized_files(root: Path) -> None:
    from PIL import Image

    batch = next(iter(build_eval_loader(_cfg(root, eval_all_images=True), 0, 1)))
    path = root / "val2017" / f"{0:012d}.jpg"
    expected = np.asarray(Image.open(path).convert("RGB").resize((300, 300), Image.BILINEAR))
    np.testing.assert_array_equal(batch.images[0].permute(1, 2, 0).numpy(), expected)


def test_missing_paths_and_too_small_dataset(tmp_path: Path, root: Path) -> None:
    with pytest.raises(DataError, match=r"data.train_annotations is not set"):
        _train(DataConfig(), 0, 1, seed=0)
    with pytest.raises(DataError, match=r"data.train_images = .* is not a folder"):
        _train(_cfg(root, train_images=tmp_path / "nowhere"), 0, 1, seed=0)
    # 24 images over 2 ranks: 12 per rank, fewer than a batch of 16
    with pytest.raises(
        DataError, match=r"24 training images over world_size 2 .* 12 images .*data\.batch_size 16"
    ):
        _train(_cfg(root, batch_size=16), 0, 2, seed=0)
    _train(_cfg(root, batch_size=12), 0, 2, seed=0).close()  # a shard of one batch
