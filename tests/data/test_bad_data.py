"""Unreadable images under both policies: missing file, truncated JPEG, non-JPEG bytes."""

from __future__ import annotations

import logging
import shutil
from itertools import islice
from pathlib import Path

import pytest
import torch
from ssd_data.config import DataConfig
from ssd_data.errors import BadImageError
from ssd_data.pipeline import build_eval_loader, build_train_loader

from tests.helpers.datasets import BAD, damage_images, make_coco


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    make_coco(root, "train2017", num_images=16, num_empty=0, seed=2)
    make_coco(root, "val2017", num_images=12, num_empty=0, seed=3)
    damage_images(root / "train2017")
    damage_images(root / "val2017")
    return root


def _cfg(root: Path, **kw) -> DataConfig:
    base = {"root": root, "batch_size": 4, "eval_batch_size": 4, "num_workers": 2}
    return DataConfig(**{**base, **kw})


def test_skip_replaces_counts_and_logs_deterministically(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = []
    for _ in range(2):
        loader = build_train_loader(_cfg(root, bad_image_policy="skip"), 0, 1, seed=0)
        with caplog.at_level(logging.WARNING, logger="ssd_data"):
            batches = list(islice(loader, 4))  # one epoch: 16 images, batch 4
        loader.close()
        assert len(batches) == 4 and all(b.images.shape[0] == 4 for b in batches)
        assert (
            loader.stats()["bad_image"] >= 3
        )  # each bad file at least once (replacements may hit one again)
        runs.append(batches)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.image_ids, b.image_ids)
    bad_ids = {1000 + i for i in BAD}
    ids = torch.cat([b.image_ids for b in runs[0]]).tolist()
    assert not bad_ids & set(ids)  # the replacements carry their own image ids
    for name in ("000000000003.jpg", "000000000006.jpg", "000000000009.jpg"):
        assert name in caplog.text
    assert "file not found" in caplog.text
    assert "truncated or corrupt" in caplog.text
    assert "not an image file" in caplog.text


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_error_policy_stops_naming_the_file(root: Path, worker_type: str) -> None:
    cfg = _cfg(root, bad_image_policy="error", worker_type=worker_type, num_workers=1)
    loader = build_train_loader(cfg, 0, 1, seed=0)
    with pytest.raises(
        BadImageError, match=r"cannot read image .*train2017/0000000000(03|06|09)\.jpg"
    ) as info:
        list(islice(loader, 4))
    assert "bad_image_policy=skip" in str(info.value)
    loader.close()


@pytest.mark.parametrize(
    ("index", "reason"),
    [(3, "file not found"), (6, "truncated or corrupt"), (9, "not an image file")],
)
def test_each_kind_of_damage_is_named(root: Path, index: int, reason: str) -> None:
    from ssd_data.coco import CocoIndex
    from ssd_data.host.samples import EvalSampleFn

    idx = CocoIndex.from_json(root / "annotations/instances_val2017.json", skip_empty=True)
    fn = EvalSampleFn(idx, root / "val2017", policy="error")
    with pytest.raises(
        BadImageError, match=rf"{index:012d}\.jpg \(image id {1000 + index} of .*\): {reason}"
    ):
        fn((0, index, index))


def test_eval_skip_leaves_bad_images_out(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    loader = build_eval_loader(_cfg(root), 0, 1)
    with caplog.at_level(logging.WARNING, logger="ssd_data"):
        ids = torch.cat([b.image_ids for b in loader]).tolist()
    assert ids == [1000 + i for i in range(12) if i not in BAD]
    assert loader.stats()["bad_image"] == 3
    assert "left out of the evaluation" in caplog.text
    with pytest.raises(BadImageError):
        list(build_eval_loader(_cfg(root, bad_image_policy="error"), 0, 1))


def test_a_folder_of_bad_images_stops_with_advice(tmp_path: Path) -> None:
    make_coco(tmp_path, "train2017", num_images=8, num_empty=0, seed=4)
    shutil.rmtree(tmp_path / "train2017")
    (tmp_path / "train2017").mkdir()
    loader = build_train_loader(_cfg(tmp_path, num_workers=0), 0, 1, seed=0)
    with pytest.raises(BadImageError, match=r"17 unreadable images in a row .* right folder"):
        next(iter(loader))
    loader.close()


def test_size_mismatch_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    _, ann = make_coco(tmp_path, "train2017", num_images=4, num_empty=0, seed=5)
    data = json.loads(ann.read_text())
    data["images"][2]["width"] += 7  # the annotation no longer matches the file
    ann.write_text(json.dumps(data))
    loader = build_train_loader(_cfg(tmp_path, batch_size=2), 0, 1, seed=0)
    with caplog.at_level(logging.WARNING, logger="ssd_data"):
        list(islice(loader, 2))  # one epoch: 4 images, batch 2
    loader.close()
    assert loader.stats()["size_mismatch"] == 1
    assert "000000000002.jpg: image size differs from its annotation" in caplog.text
