"""Tests of the synthetic COCO-format dataset (ssd_data.synthetic.generate*)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ssd_data.synthetic.generate import MARKER_NAME, generate_synthetic_coco
from ssd_data.synthetic.presets import PRESETS, Difficulty, resolve_difficulty

# COCO 2017's category ids 1..90 without these ten (written out here, independent of the module).
COCO_MISSING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}

# Easy preset with every feature frequent enough to show up in a few dozen images.
FEATURES = dataclasses.replace(
    PRESETS["easy"],
    name="features",
    grayscale_fraction=0.3,
    empty_fraction=0.15,
    crowd_fraction=0.3,
)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "coco"
    return generate_synthetic_coco(
        out, train_images=40, val_images=12, seed=3, difficulty=FEATURES, workers=1
    )


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())


def test_layout_and_coco_fields(dataset: Path) -> None:
    for split, n in (("train", 40), ("val", 12)):
        coco = _load(dataset, split)
        assert {"info", "licenses", "images", "annotations", "categories"} <= coco.keys()
        assert len(coco["images"]) == n
        cats = coco["categories"]
        assert [c["id"] for c in cats] == [i for i in range(1, 91) if i not in COCO_MISSING_IDS]
        assert cats[0] == {"supercategory": "person", "id": 1, "name": "person"}
        assert cats[-1] == {"supercategory": "indoor", "id": 90, "name": "toothbrush"}
        assert {c["name"] for c in cats} >= {"traffic light", "hair drier", "dining table", "tv"}
        ids = [im["id"] for im in coco["images"]]
        assert len(set(ids)) == n
        for im in coco["images"]:
            path = dataset / f"{split}2017" / im["file_name"]
            assert im["file_name"] == f"{im['id']:012d}.jpg"
            with Image.open(path) as img:
                assert img.format == "JPEG"
                assert img.size == (im["width"], im["height"])
                assert max(img.size) <= 640
        ann_ids = [a["id"] for a in coco["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        used = set(FEATURES.category_ids)
        assert {a["category_id"] for a in coco["annotations"]} <= used
    train_ids = {im["id"] for im in _load(dataset, "train")["images"]}
    val_ids = {im["id"] for im in _load(dataset, "val")["images"]}
    assert not train_ids & val_ids


def test_dataset_has_grayscale_empty_crowd_and_varied_sizes(dataset: Path) -> None:
    coco = _load(dataset, "train")
    modes = {Image.open(dataset / "train2017" / im["file_name"]).mode for im in coco["images"]}
    assert modes == {"RGB", "L"}
    with_anns = {a["image_id"] for a in coco["annotations"]}
    assert 0 < len(with_anns) < len(coco["images"])  # some images have no objects
    crowd = [a for a in coco["annotations"] if a["iscrowd"]]
    assert crowd and all(isinstance(a["segmentation"]["counts"], list) for a in crowd)
    assert len({(im["width"], im["height"]) for im in coco["images"]}) >= 4


def test_boxes_area_segmentation_are_the_visible_mask(dataset: Path) -> None:
    from pycocotools import mask as mask_utils

    for split in ("train", "val"):
        coco = _load(dataset, split)
        sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
        for ann in coco["annotations"]:
            h, w = sizes[ann["image_id"]]
            seg = ann["segmentation"]
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
            m = mask_utils.decode(rle).astype(bool)
            assert m.shape == (h, w)
            ys, xs = np.nonzero(m)
            expected = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["bbox"] == [float(v) for v in expected]
            assert ann["area"] == float(m.sum())
            x, y, bw, bh = ann["bbox"]
            assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h


def test_class_is_visible_from_the_object_colour(dataset: Path) -> None:
    """Inside each (non-crowd, colour-image) object mask, the mean pixel is nearest its class colour."""
    from pycocotools import mask as mask_utils

    coco = _load(dataset, "train")
    palette = np.array(FEATURES.palette, dtype=np.float64)
    index = {cid: k for k, cid in enumerate(FEATURES.category_ids)}
    images = {im["id"]: im for im in coco["images"]}
    checked = 0
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        img = Image.open(dataset / "train2017" / im["file_name"])
        if ann["iscrowd"] or img.mode != "RGB" or ann["area"] < 400:
            continue
        m = mask_utils.decode(ann["segmentation"]).astype(bool)
        mean = np.asarray(img, dtype=np.float64)[m].mean(axis=0)
        nearest = int(np.argmin(((palette - mean) ** 2).sum(axis=1)))
        assert nearest == index[ann["category_id"]], (ann, mean)
        checked += 1
    assert checked >= 20


def test_loads_in_pycocotools_and_faster_coco_eval_and_scores_ground_truth_as_perfect(
    dataset: Path,
) -> None:
    import contextlib
    import io

    import faster_coco_eval
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_path = str(dataset / "annotations" / "instances_val2017.json")
    raw = _load(dataset, "val")
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in raw["annotations"]
        if not a["iscrowd"]
    ]
    assert dets
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        assert len(gt.getImgIds()) == 12 and len(gt.getCatIds()) == 80
        assert len(gt.getAnnIds()) == len(raw["annotations"])
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0)
        # The segmentation loads too: pycocotools' masks have the annotated area.
        for ann in gt.loadAnns(gt.getAnnIds()):
            assert gt.annToMask(ann).sum() == ann["area"]

        fgt = faster_coco_eval.COCO(gt_path)
        assert len(fgt.getImgIds()) == 12 and len(fgt.getCatIds()) == 80
        fev = COCOeval_faster(fgt, fgt.loadRes(dets), "bbox")
        fev.evaluate()
        fev.accumulate()
        fev.summarize()
        assert fev.stats[0] == pytest.approx(1.0)


def test_deterministic_and_independent_of_worker_count(tmp_path: Path) -> None:
    kwargs = {"train_images": 50, "val_images": 20, "seed": 11}
    a = generate_synthetic_coco(tmp_path / "a", **kwargs, workers=1)
    b = generate_synthetic_coco(tmp_path / "b", **kwargs, workers=2)
    fa, fb = _files(a), _files(b)
    assert len(fa) == 50 + 20 + 4  # images, 2 jsons, marker, lock file
    assert fa == fb
    c = generate_synthetic_coco(tmp_path / "c", **{**kwargs, "seed": 12}, workers=1)
    fc = _files(c)
    assert fc.keys() == fa.keys()
    assert sum(fa[k] != fc[k] for k in fa) > 60


def test_rerun_is_a_noop_and_changed_arguments_regenerate(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    generate_synthetic_coco(out, train_images=6, val_images=2, seed=0, workers=1)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    generate_synthetic_coco(out, train_images=6, val_images=2, seed=0, workers=1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    generate_synthetic_coco(out, train_images=4, val_images=2, seed=0, workers=1, categories="used")
    assert len(list((out / "train2017").iterdir())) == 4
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["train_images"] == 4 and marker["categories"] == "used"
    cats = _load(out, "train")["categories"]
    expected = [cid for cid in range(1, 91) if cid in set(PRESETS["easy"].category_ids)]
    assert [c["id"] for c in cats] == expected  # only the drawn categories, in COCO's order
    assert not (out / ".synthetic-partial").exists()


def test_refuses_a_folder_holding_another_dataset(tmp_path: Path) -> None:
    (tmp_path / "train2017").mkdir()
    (tmp_path / "train2017" / "000000000009.jpg").write_bytes(b"real image")
    with pytest.raises(FileExistsError, match=r"no synthetic_coco\.json marker"):
        generate_synthetic_coco(tmp_path, train_images=2, val_images=1, seed=0, workers=1)
    assert (tmp_path / "train2017" / "000000000009.jpg").read_bytes() == b"real image"


def test_bad_arguments_have_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown synthetic difficulty 'insane'"):
        generate_synthetic_coco(tmp_path, train_images=1, val_images=1, seed=0, difficulty="insane")
    with pytest.raises(ValueError, match="must be >= 0"):
        generate_synthetic_coco(tmp_path, train_images=-1, val_images=1, seed=0)
    with pytest.raises(ValueError, match="not COCO category ids"):
        dataclasses.replace(PRESETS["easy"], category_ids=(1, 12))
    with pytest.raises(ValueError, match="shapes x"):
        dataclasses.replace(PRESETS["easy"], category_ids=(*PRESETS["easy"].category_ids, 90))


def test_presets_classes_are_distinct_and_get_harder() -> None:
    from ssd_data.synthetic.draw import SHAPE_NAMES
    from ssd_data.synthetic.presets import TEXTURES

    levels = [resolve_difficulty(n) for n in ("easy", "medium", "hard")]
    assert [len(d.category_ids) for d in levels] == [10, 20, 80]
    for d in levels:
        looks = {
            (SHAPE_NAMES[k % d.num_shapes], TEXTURES[(k // d.num_shapes) % d.num_textures])
            for k in range(len(d.category_ids))
        }
        assert len(looks) == len(d.category_ids)  # shape+texture alone identify the class
    easy = levels[0]
    assert len(set(easy.palette)) == len(easy.category_ids)  # easy: one colour per class too
    assert [d.object_scale[0] for d in levels] == sorted(
        [d.object_scale[0] for d in levels], reverse=True
    )
    assert [d.min_visible for d in levels] == sorted([d.min_visible for d in levels], reverse=True)
    assert isinstance(resolve_difficulty(easy), Difficulty)


def test_concurrent_calls_generate_once(tmp_path: Path) -> None:
    import threading

    out = tmp_path / "shared"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            generate_synthetic_coco(out, train_images=20, val_images=4, seed=5, workers=1)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    single = generate_synthetic_coco(
        tmp_path / "single", train_images=20, val_images=4, seed=5, workers=1
    )
    assert _files(out) == _files(single)
