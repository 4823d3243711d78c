"""COCO reading: label map, box conversion, image selection, bad annotations, the parse cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from ssd_data import coco
from ssd_data.coco import CocoIndex
from ssd_data.errors import AnnotationError
from ssd_data.labels import label_map, label_to_category_id

from tests.helpers.datasets import write_json

CATS = [{"id": 9, "name": "nine"}, {"id": 3, "name": "three"}, {"id": 5, "name": "five"}]


def _dataset() -> dict:
    """Handmade: image 1 (200x100) two boxes, image 2 only a crowd box, image 3 nothing,
    image 4 only a degenerate box; plus zero/negative/outside/partly-outside boxes on image 1."""
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 100, "width": 200},
            {"id": 2, "file_name": "b.jpg", "height": 50, "width": 50},
            {"id": 3, "file_name": "c.jpg", "height": 60, "width": 80},
            {"id": 4, "file_name": "d.jpg", "height": 60, "width": 80},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [20, 10, 40, 30], "iscrowd": 0},
            {"id": 11, "image_id": 2, "category_id": 9, "bbox": [0, 0, 50, 50], "iscrowd": 1},
            {"id": 12, "image_id": 1, "category_id": 5, "bbox": [100, 50, 50, 25], "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 9, "bbox": [10, 10, 0, 20]},  # zero width
            {"id": 14, "image_id": 1, "category_id": 9, "bbox": [50, 10, -5, 20]},  # negative
            {"id": 15, "image_id": 1, "category_id": 9, "bbox": [300, 10, 20, 20]},  # outside
            {"id": 16, "image_id": 1, "category_id": 9, "bbox": [180, 90, 40, 20]},  # partly out
            {"id": 17, "image_id": 4, "category_id": 3, "bbox": [5, 5, 10, 0]},  # degenerate only
        ],
        "categories": CATS,
    }


def test_label_map_follows_file_order_not_ids() -> None:
    assert label_map(CATS) == {9: 1, 3: 2, 5: 3}
    assert label_to_category_id(CATS).tolist() == [0, 9, 3, 5]


def test_parse_boxes_labels_and_selection(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_json(tmp_path / "inst.json", _dataset())
    with caplog.at_level(logging.WARNING):
        idx = CocoIndex.from_json(path, skip_empty=True, cache=False)
    # Image 3 has no annotation; image 2 (crowd only) and 4 (degenerate only) count as annotated.
    assert [idx.image_id(i) for i in range(idx.num_images)] == [1, 2, 4]
    assert idx.num_classes == 4
    assert idx.label_to_category_id.tolist() == [0, 9, 3, 5]
    assert idx.file_name(0) == "a.jpg" and idx.image_size(0) == (100, 200)
    boxes, labels, crowd = idx.annotations(0)
    # File order kept; pixel xywh -> ltrb / (w, h, w, h); the partly-outside one clipped.
    expected = np.array(
        [
            [20 / 200, 10 / 100, 60 / 200, 40 / 100],
            [100 / 200, 50 / 100, 150 / 200, 75 / 100],
            [180 / 200, 90 / 100, 1.0, 1.0],
        ]
    )
    np.testing.assert_allclose(boxes, expected, rtol=1e-6)
    assert labels.tolist() == [2, 3, 1] and crowd.tolist() == [False, False, False]
    _, l2, c2 = idx.annotations(1)
    assert l2.tolist() == [1] and c2.tolist() == [True]
    assert len(idx.annotations(2)[0]) == 0
    assert idx.counts["dropped_degenerate_boxes"] == 4  # ids 13, 14, 15, 17
    assert idx.counts["clipped_boxes"] == 1
    assert idx.counts["images_without_annotations"] == 1
    assert "dropped 4 degenerate boxes" in caplog.text and "13" in caplog.text

    everything = CocoIndex.from_json(path, skip_empty=False, cache=False)
    assert [everything.image_id(i) for i in range(everything.num_images)] == [1, 2, 3, 4]


def test_cache_is_used_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path / "inst.json", _dataset())
    first = CocoIndex.from_json(path, skip_empty=True)
    cache = tmp_path / "inst.ssd-index.npz"
    assert cache.is_file()
    with np.load(cache, allow_pickle=False) as npz:  # plain arrays, no pickle
        assert "boxes" in npz.files

    def no_parse(p: Path) -> dict:
        raise AssertionError("json parsed although the cache is valid")

    monkeypatch.setattr(coco, "_parse", no_parse)
    second = CocoIndex.from_json(path, skip_empty=True)
    np.testing.assert_array_equal(first.boxes, second.boxes)
    assert second.categories == CATS and second.file_name(1) == "b.jpg"
    monkeypatch.undo()

    data = _dataset()
    data["annotations"] = data["annotations"][:2]
    write_json(path, data)  # new size/mtime -> cache stale -> re-parsed
    third = CocoIndex.from_json(path, skip_empty=True)
    assert [third.image_id(i) for i in range(third.num_images)] == [1, 2]


def test_any_coco_format_dataset_class_count(tmp_path: Path) -> None:
    data = _dataset()
    data["categories"] = [{"id": 100 + k, "name": str(k)} for k in range(12)]
    for ann in data["annotations"]:
        ann["category_id"] = 111
    idx = CocoIndex.from_json(write_json(tmp_path / "x.json", data), skip_empty=True, cache=False)
    assert idx.num_classes == 13
    assert set(idx.labels.tolist()) == {12}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["annotations"][0].update(category_id=77),
            r"annotations\[0\] \(id 10\).*category_id 77",
        ),
        (
            lambda d: d["annotations"][2].update(image_id=999),
            r"annotations\[2\] \(id 12\).*image_id 999",
        ),
        (
            lambda d: d["annotations"][0].pop("bbox"),
            r"annotations\[0\] \(id 10\).*missing key 'bbox'",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
            r"annotations\[0\].*4 finite numbers",
        ),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 3]), r"4 finite numbers"),
        (lambda d: d["images"][1].pop("width"), r"images\[1\] \(id 2\).*missing key 'width'"),
        (lambda d: d["images"][1].update(height=0), r"images\[1\] \(id 2\).*must be positive"),
        (lambda d: d["images"][2].update(id=1), r"images\[2\] \(id 1\).*appears twice"),
        (lambda d: d.pop("categories"), r"missing list 'categories'"),
        (
            lambda d: d["categories"].append({"id": 9, "name": "dup"}),
            r"categories\[3\] .* repeats the id of categories\[0\]",
        ),
    ],
)
def test_bad_annotations_name_file_and_record(tmp_path: Path, mutate, expected: str) -> None:
    data = _dataset()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=expected) as info:
        CocoIndex.from_json(path, skip_empty=True, cache=False)
    assert str(path) in str(info.value)


def test_malformed_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(AnnotationError, match=r"broken\.json: not valid JSON \(line 2"):
        CocoIndex.from_json(path, skip_empty=True, cache=False)
    with pytest.raises(AnnotationError, match=r"does not exist.*ssd-data download"):
        CocoIndex.from_json(tmp_path / "nope.json", skip_empty=True)


def test_config_paths_and_crop_attempts(tmp_path: Path) -> None:
    from pydantic import ValidationError
    from ssd_data.config import DataConfig

    cfg = DataConfig(root=tmp_path, val_images=tmp_path / "elsewhere")
    assert cfg.train_images == tmp_path / "train2017"
    assert cfg.train_annotations == tmp_path / "annotations" / "instances_train2017.json"
    assert cfg.val_annotations == tmp_path / "annotations" / "instances_val2017.json"
    assert cfg.val_images == tmp_path / "elsewhere"
    assert DataConfig(crop_attempts="50").crop_attempts == 50
    with pytest.raises(ValidationError, match="crop_attempts must be 1"):
        DataConfig(crop_attempts=10)
