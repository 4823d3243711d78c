"""The never-dropping training stream (NVIDIA v0.7's reader): epoch clock and straddling batches.

Golden epoch starts come from NVIDIA's published DGX A100 log (8 GPUs x 114 images, 117,266
training images; `current_iter_num` of its epoch_start lines), not from our code.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from ssd_data.coco import CocoIndex
from ssd_data.config import DataConfig
from ssd_data.pipeline import TrainLoader, build_train_loader
from ssd_data.sampler import EpochClock

from tests.helpers.datasets import make_coco

# NVIDIA v0.7 dgxa100 result log: 1-based epoch -> iteration (0-based) of its epoch_start
NVIDIA_DGXA100_EPOCH_STARTS = {
    2: 129, 3: 258, 4: 386, 5: 515, 6: 643, 7: 772, 8: 901, 9: 1029, 10: 1158, 11: 1286,
    45: 5658, 46: 5787, 47: 5915, 48: 6044, 49: 6172, 50: 6301, 51: 6429,
}  # fmt: skip


def test_epoch_starts_match_nvidia_dgxa100_log() -> None:
    clock = EpochClock(shard_size=117266 // 8, batch_size=114)
    assert clock.shard_size == 14658
    assert clock.epoch_start_batch(0) == 0
    for epoch_1based, iteration in NVIDIA_DGXA100_EPOCH_STARTS.items():
        e = epoch_1based - 1
        assert clock.epoch_start_batch(e) == iteration, epoch_1based
        assert clock.epoch_of_batch(iteration) == e
        assert clock.epoch_of_batch(iteration - 1) == e - 1  # the straddling batch before it


def test_epoch_clock_is_consistent_for_small_shapes() -> None:
    for shard, batch in itertools.product(range(1, 30), range(1, 30)):
        if shard < batch:
            continue
        clock = EpochClock(shard, batch)
        for e in range(6):
            b = clock.epoch_start_batch(e)
            # batch b is the first whose first sample (b * batch) is of epoch e
            assert b * batch >= e * shard and (b - 1) * batch < e * shard
            assert clock.epoch_of_batch(b) == e
        assert clock.locate(shard * 3 + shard - 1) == (3, shard - 1)
    with pytest.raises(ValueError, match="shard_size and batch_size"):
        EpochClock(0, 4)


NUM_TRAIN = 12  # 11 annotated images: N is not a multiple of any batch size used below


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_coco(root, "train2017", num_images=NUM_TRAIN, num_empty=1, seed=7)
    return root


_OPEN: list[TrainLoader] = []


@pytest.fixture(autouse=True)
def _close_loaders() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _loader(root: Path, rank: int, world: int, **kw) -> TrainLoader:
    cfg = {"root": root, "batch_size": 4, "num_workers": 2, "max_boxes": 8, **kw}
    loader = build_train_loader(DataConfig(**cfg), rank, world, seed=13)
    _OPEN.append(loader)
    return loader


def _take(loader: TrainLoader, n: int) -> list:
    return list(itertools.islice(iter(loader), n))


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for fx, fy in zip(x, y, strict=True):
            torch.testing.assert_close(fx, fy, rtol=0, atol=0)


def test_every_epoch_is_one_permutation_of_the_shard(root: Path) -> None:
    # 11 images, batch 4: epochs start at batches 0, 3 (11/4), 6 (22/4), 9 (33/4); batches
    # 2, 5 and 8 straddle (3, 2 and 1 images of the ending epoch)
    loader = _loader(root, 0, 1)
    assert (loader.num_samples, loader.shard_size, loader.batch_size) == (11, 11, 4)
    assert [loader.epoch_start_batch(e) for e in range(4)] == [0, 3, 6, 9]
    assert [loader.epoch_of_batch(b) for b in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    batches = _take(loader, 11)  # 44 images: epochs 0..3
    assert loader.batches_done == 11 and all(b.images.shape[0] == 4 for b in batches)
    ids = torch.cat([b.image_ids for b in batches]).tolist()
    index = CocoIndex.from_json(root / "annotations/instances_train2017.json", skip_empty=True)
    every_image = sorted(index.image_id(i) for i in range(index.num_images))
    epochs = [ids[e * 11 : (e + 1) * 11] for e in range(4)]
    for order in epochs:
        assert sorted(order) == every_image  # each image exactly once per epoch
    assert len({tuple(o) for o in epochs}) == 4  # reshuffled every epoch
    straddler = batches[2].image_ids.tolist()
    assert straddler == epochs[0][8:] + epochs[1][:1]


def test_ranks_split_each_epoch_and_drop_the_remainder(root: Path) -> None:
    # 11 images over 2 ranks: shards of 5 (one image of each epoch's permutation unused, as in
    # NVIDIA's reader); batch 2: epochs start at batches 0, 3 (5/2), 5, 8 (15/2)
    per_rank = []
    for rank in range(2):
        loader = _loader(root, rank, 2, batch_size=2)
        assert loader.shard_size == 5
        assert [loader.epoch_start_batch(e) for e in range(4)] == [0, 3, 5, 8]
        ids = torch.cat([b.image_ids for b in _take(loader, 10)]).tolist()
        per_rank.append([ids[e * 5 : (e + 1) * 5] for e in range(4)])
    for e in range(4):
        both = per_rank[0][e] + per_rank[1][e]
        assert len(set(both)) == 10  # disjoint shards of distinct images


@pytest.mark.parametrize("interrupt_after", [2, 3, 5])  # 2 and 5 straddle, 3 starts epoch 1
def test_resume_mid_stream_is_bitwise_exact(root: Path, interrupt_after: int) -> None:
    full = _take(_loader(root, 0, 1, num_workers=0), 9)
    first = _loader(root, 0, 1)
    seen = _take(first, interrupt_after)
    state = first.state_dict()
    assert state["batches_done"] == interrupt_after
    assert all(type(v) is int for k, v in state.items() if k != "stats")
    resumed = _loader(root, 0, 1, num_workers=1, prefetch=3)
    resumed.load_state_dict(state)
    _same(seen + _take(resumed, 9 - interrupt_after), full)
    assert resumed.batches_done == 9
    assert resumed.stats()["images"] == 9 * 4


def test_iter_again_continues_where_the_caller_stopped(root: Path) -> None:
    full = _take(_loader(root, 0, 1, num_workers=0), 7)
    loader = _loader(root, 0, 1)
    it = iter(loader)
    head = [next(it), next(it)]  # more were prefetched: they are made again below
    middle = _take(loader, 3)
    tail = _take(loader, 2)
    _same(head + middle + tail, full)
    assert loader.batches_done == 7
    with pytest.raises(StopIteration):  # an older iterator stops: it would steal batches
        next(it)


def test_zero_and_two_workers_give_the_same_batches(root: Path) -> None:
    _same(
        _take(_loader(root, 1, 2, batch_size=3, num_workers=0), 7),
        _take(_loader(root, 1, 2, batch_size=3, num_workers=2), 7),
    )
