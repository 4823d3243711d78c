"""`ssd-predict` on image files: drawn images, a predictions.json that ssd-eval accepts, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ssd_core.model import SSD300
from ssd_core.postprocess import PostProcessor
from ssd_eval.cli import main as ssd_eval_main
from ssd_train.predict.cli import main
from ssd_train.predict.sources import assign_image_ids, label_map

from tests.helpers.predict import export_random_model, good_and_bad_images, synthetic_val_set

TOPK = 20  # small post-processing blocks keep the test fast


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_val_set(tmp_path_factory.mktemp("syn"), images=3)


@pytest.fixture(scope="module")
def weights(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-init SSD300 exported as ssd-train does, settings naming the val json."""
    data = {
        "val_annotations": str(dataset / "annotations" / "instances_val2017.json"),
        "augment_impl": "reference",
    }
    return export_random_model(dataset, tmp_path_factory.mktemp("w") / "best.pt", TOPK, data)


def test_predict_folder_draws_images_and_ssd_eval_accepts_predictions(
    dataset: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path = dataset / "annotations" / "instances_val2017.json"
    gt = json.loads(gt_path.read_text())
    out = tmp_path / "out"
    rc = main(
        [
            "--weights",
            str(weights),
            str(dataset / "val2017"),
            "--out",
            str(out),
            "--score-threshold",
            "0",
            "--batch-size",
            "3",
            "--device",
            "cpu",
            "--gt",
            str(gt_path),
        ]
    )
    assert rc == 0
    records = json.loads((out / "predictions.json").read_text())
    by_file = {im["file_name"]: im for im in gt["images"]}
    assert {r["file_name"] for r in records} == set(by_file)
    for r in records:
        assert r["image_id"] == by_file[r["file_name"]]["id"]
        assert set(r) == {"image_id", "category_id", "bbox", "score", "file_name"}
    assert {r["category_id"] for r in records} <= {c["id"] for c in gt["categories"]}
    for name, im in by_file.items():  # drawn at the original size
        with Image.open(out / name) as drawn:
            assert drawn.size == (im["width"], im["height"])
    # ssd-eval accepts the file.
    assert ssd_eval_main(["--gt", str(gt_path), "--detections", str(out / "predictions.json")]) == 0
    assert "mAP = " in capsys.readouterr().out

    # Golden: the first image's best detection computed independently (PIL bilinear resize,
    # hand-written normalisation, eager model, the post-processor), in original pixels.
    first = sorted(by_file)[0]
    im = by_file[first]
    with Image.open(dataset / "val2017" / first) as pil:
        arr = np.asarray(pil.convert("RGB").resize((300, 300), Image.Resampling.BILINEAR))
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    model = SSD300(num_classes=len(gt["categories"]) + 1, backbone_weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True)["model"])
    with torch.no_grad():
        dets = PostProcessor(0.0, topk_per_class=TOPK, max_detections=TOPK)(*model.eval()(x))
    left, top, right, bottom = dets.boxes[0, 0].double().tolist()
    w, h = im["width"], im["height"]
    expected = [left * w, top * h, (right - left) * w, (bottom - top) * h]
    mine = [r for r in records if r["image_id"] == im["id"]]
    assert len(mine) == int(dets.counts[0])
    best = max(mine, key=lambda r: r["score"])
    assert best["category_id"] == gt["categories"][int(dets.labels[0, 0]) - 1]["id"]
    np.testing.assert_allclose(best["bbox"], expected, rtol=1e-4, atol=0.02)


@pytest.fixture(scope="module")
def graded_weights(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``weights`` with the class heads scaled by 1e-3: random SSD300 logits are so large that
    every score is 1.0; smaller logits give scores spread around 1 / C."""
    saved = torch.load(weights, weights_only=True)
    model = {k: v * 1e-3 if k.startswith("conf_heads.") else v for k, v in saved["model"].items()}
    path = tmp_path_factory.mktemp("graded") / "best.pt"
    torch.save({**saved, "model": model}, path)
    return path


def test_names_from_the_settings_json_and_threshold_filters(
    dataset: Path, graded_weights: Path, tmp_path: Path
) -> None:
    weights = graded_weights
    gt = json.loads((dataset / "annotations" / "instances_val2017.json").read_text())
    meta = torch.load(weights, weights_only=True)["metadata"]
    labels = label_map(meta, len(gt["categories"]) + 1)
    assert labels.names[1:] == [c["name"] for c in gt["categories"]]
    assert labels.category_ids[1:] == [c["id"] for c in gt["categories"]]

    def predict(threshold: float, out: Path) -> list[dict]:
        args = ["--weights", str(weights), str(dataset / "val2017" / "*2.jpg"), "--out", str(out),
                "--score-threshold", str(threshold), "--no-draw", "--device", "cpu"]  # fmt: skip
        assert main(args) == 0
        assert not list(out.glob("*.jpg"))
        return json.loads((out / "predictions.json").read_text())

    everything = predict(0.0, tmp_path / "all")
    scores = sorted({r["score"] for r in everything})  # as written: rounded
    middle = len(scores) // 2
    threshold = (scores[middle - 1] + scores[middle]) / 2  # some detections pass, some do not
    above = [r for r in everything if r["score"] > threshold]
    assert 0 < len(above) < len(everything)
    records = predict(threshold, tmp_path / "above")
    assert records and all(r["score"] > threshold for r in records)
    # greedy NMS keeps a box by its higher-scored neighbours only: the same detections above it
    key = lambda r: (r["image_id"], r["category_id"], r["score"], *r["bbox"])  # noqa: E731
    assert sorted(map(key, records)) == sorted(map(key, above))
    # Without --gt: image ids from the file stems' numbers (synthetic names are <id>.jpg).
    assert {r["image_id"] for r in records} <= {
        int(Path(im["file_name"]).stem) for im in gt["images"]
    }


def test_image_id_rules() -> None:
    paths = [Path("a/000000000139.jpg"), Path("b/img_7.png"), Path("c/x.jpg")]
    assert assign_image_ids(paths) == [0, 1, 2]  # x.jpg has no number: indices for all
    assert assign_image_ids(paths[:2]) == [139, 7]
    assert assign_image_ids([Path("1.jpg"), Path("a1.jpg")]) == [0, 1]  # same number twice
    assert assign_image_ids(paths, {"x.jpg": 5}) == [139, 7, 5]  # COCO id; stems for the rest
    # 139 is taken by a COCO id: the rest get indices past the largest COCO id
    assert assign_image_ids(paths[:2], {"img_7.png": 139}) == [140, 139]


def test_unreadable_image_is_skipped_and_counted(
    dataset: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, good = good_and_bad_images(dataset, tmp_path / "imgs", "broken.jpg", b"not a jpeg")
    rc = main(
        [
            "--weights",
            str(weights),
            str(folder),
            "--out",
            str(tmp_path / "o"),
            "--score-threshold",
            "0.2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "1 unreadable images skipped" in captured.out
    assert "broken.jpg" in captured.err
    assert (tmp_path / "o" / good.name).is_file()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no_images", "no images found"),
        ("missing_source", "no such file or folder"),
        ("missing_weights", "no weights file"),
        ("foreign_weights", "not an ssd-mlperf weights file"),
        ("garbage_weights", "torch cannot read it"),
        ("all_unreadable", "none of the 1 images could be read"),
        ("export_without_out", "needs --out FILE"),
    ],
)
def test_bad_inputs_exit_2_with_one_message(
    case: str, expected: str, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    w = str(weights)
    if case == "foreign_weights":
        torch.save({"state_dict": {}}, tmp_path / "f.pt")
        w = str(tmp_path / "f.pt")
    elif case == "garbage_weights":
        (tmp_path / "g.pt").write_bytes(b"garbage")
        w = str(tmp_path / "g.pt")
    elif case == "missing_weights":
        w = str(tmp_path / "nope.pt")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    argv = {
        "no_images": [str(empty)],
        "missing_source": [str(tmp_path / "nothing")],
        "all_unreadable": [str(tmp_path / "bad.png")],
        "export_without_out": ["--export", "onnx"],
    }.get(case, [str(empty)])
    rc = main(
        ["--weights", w, *argv, "--out", str(tmp_path / "o"), "--device", "cpu"]
        if case != "export_without_out"
        else ["--weights", w, *argv]
    )
    assert rc == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (after the progress bar and skipped-file lines)
    assert last.startswith("ssd-predict: error: ")
    assert expected in last
    assert err.count("ssd-predict: error:") == 1
    assert "Traceback" not in err
