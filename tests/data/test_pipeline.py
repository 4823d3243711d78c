"""Train/eval loaders: fixed shapes, determinism, sharding, epochs, exact mid-epoch resume."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from ssd_data.coco import CocoIndex
from ssd_data.config import DataConfig
from ssd_data.errors import DataError
from ssd_data.pipeline import build_eval_loader, build_train_loader
from ssd_data.sampler import epoch_permutation

from ._fixtures import make_coco

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


def _batches(loader, epoch: int = 0) -> list:
    loader.set_epoch(epoch)
    return list(loader)


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for fx, fy in zip(x, y, strict=True):
            torch.testing.assert_close(fx, fy, rtol=0, atol=0)


def test_train_batch_shapes_and_contents(root: Path) -> None:
    loader = build_train_loader(_cfg(root), rank=0, world_size=1, seed=3)
    assert loader.num_samples == NUM_TRAIN - EMPTY
    assert len(loader) == (NUM_TRAIN - EMPTY) // 4
    batches = _batches(loader)
    assert len(batches) == len(loader)
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
    contiguous = build_train_loader(_cfg(root, channels_last=False), 0, 1, seed=3)
    first = next(iter(contiguous))
    assert first.images.is_contiguous()
    torch.testing.assert_close(first.images, batches[0].images, rtol=0, atol=0)


def test_deterministic_and_independent_of_workers(root: Path) -> None:
    reference = _batches(build_train_loader(_cfg(root, num_workers=0), 0, 1, seed=5))
    _same(reference, _batches(build_train_loader(_cfg(root, num_workers=3), 0, 1, seed=5)))
    other_seed = _batches(build_train_loader(_cfg(root), 0, 1, seed=6))
    assert not torch.equal(
        torch.cat([b.image_ids for b in reference]), torch.cat([b.image_ids for b in other_seed])
    )


def test_process_workers_give_the_same_batches(root: Path) -> None:
    threads = _batches(build_train_loader(_cfg(root, num_workers=2), 0, 2, seed=9), epoch=1)
    processes = build_train_loader(_cfg(root, num_workers=2, worker_type="process"), 0, 2, seed=9)
    _same(threads, _batches(processes, epoch=1))


def test_epochs_reshuffle_from_the_seed(root: Path) -> None:
    loader = build_train_loader(_cfg(root, batch_size=2), 0, 1, seed=11)
    index = CocoIndex.from_json(root / "annotations/instances_train2017.json", skip_empty=True)
    all_ids = [index.image_id(i) for i in range(index.num_images)]
    orders = []
    for epoch in (0, 1, 0):
        ids = torch.cat([b.image_ids for b in _batches(loader, epoch)]).tolist()
        expected = [all_ids[i] for i in epoch_permutation(len(all_ids), 11, epoch)]
        assert ids == expected[: len(ids)]
        orders.append(ids)
    assert orders[0] != orders[1] and orders[0] == orders[2]


def test_ranks_are_disjoint_and_cover_the_epoch(root: Path) -> None:
    world, per_rank_ids = 3, []
    for rank in range(world):
        loader = build_train_loader(_cfg(root, batch_size=2), rank, world, seed=4)
        assert len(loader) == 24 // 3 // 2
        per_rank_ids.append(torch.cat([b.image_ids for b in _batches(loader, 2)]).tolist())
    flat = [i for ids in per_rank_ids for i in ids]
    assert len(flat) == len(set(flat)) == 24  # disjoint, and 24 = 3 ranks x 4 steps x 2 covers all


@pytest.mark.parametrize("interrupt_after", [1, 3])
def test_mid_epoch_resume_is_exact(root: Path, interrupt_after: int) -> None:
    cfg = _cfg(root, batch_size=2)
    full = _batches(build_train_loader(cfg, 1, 2, seed=21), epoch=1)
    first = build_train_loader(cfg, 1, 2, seed=21)
    first.set_epoch(1)
    it = iter(first)
    seen = [next(it) for _ in range(interrupt_after)]
    state = first.state_dict()
    first.close()
    assert state["epoch"] == 1 and state["batches_done"] == interrupt_after
    # New loader, other worker settings: state holds positions, not pipeline snapshots.
    resumed = build_train_loader(_cfg(root, batch_size=2, num_workers=1, prefetch=3), 1, 2, seed=21)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # same epoch: keeps the loaded position
    rest = list(resumed)
    _same(seen + rest, full)
    assert resumed.stats()["images"] == 2 * len(full)
    # After the epoch, the next one starts from its beginning.
    _same(_batches(resumed, 2), _batches(build_train_loader(cfg, 1, 2, seed=21), 2))


def test_resume_refuses_another_seed_and_adapts_to_another_world_size(root: Path) -> None:
    loader = build_train_loader(_cfg(root, batch_size=2), 0, 2, seed=1)
    loader.set_epoch(0)
    it = iter(loader)
    next(it)
    next(it)
    state = loader.state_dict()
    with pytest.raises(DataError, match=r"seed=1 but this run has seed=2"):
        build_train_loader(_cfg(root, batch_size=2), 0, 2, seed=2).load_state_dict(state)
    single = build_train_loader(_cfg(root, batch_size=2), 0, 1, seed=1)
    single.load_state_dict(state)  # 2 ranks x 2 batches x 2 images = 8 images = 4 batches of 2
    assert len(list(single)) == len(single) - 4


def test_extra_boxes_are_dropped_counted_and_logged(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loader = build_train_loader(_cfg(root, max_boxes=1, batch_size=2), 0, 1, seed=0)
    with caplog.at_level(logging.WARNING, logger="ssd_data"):
        batches = _batches(loader)
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
        build_train_loader(DataConfig(), 0, 1, seed=0)
    with pytest.raises(DataError, match=r"data.train_images = .* is not a folder"):
        build_train_loader(_cfg(root, train_images=tmp_path / "nowhere"), 0, 1, seed=0)
    with pytest.raises(DataError, match=r"fewer than one batch per rank"):
        build_train_loader(_cfg(root, batch_size=16), 0, 2, seed=0)
