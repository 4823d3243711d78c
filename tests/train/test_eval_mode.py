"""``ssd-train --mode eval``: the printed COCO table is the score of the weights' own detections,
recomputed independently (the detections as the evaluator received them, converted to COCO
records here and scored by pycocotools).

A random SSD300 detects nothing real, so the ground truth of the scored run is made from the
weights' detections of a first run (two per image): the scored run must then find them among
its other, false, detections, which gives a mAP well away from 0 and 1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from ssd_core import SSD300
from ssd_data import generate_synthetic_coco
from ssd_eval.evaluator import CocoEvaluator
from ssd_train.__main__ import main
from ssd_train.checkpoint.weights import export_weights

from tests.helpers.coco_reference import pycocotools_stats
from tests.helpers.trainer_runs import clear_ssd_environment


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ssd_environment(monkeypatch)


def _graded_ssd300_weights(num_classes: int, path: Path) -> Path:
    """Random SSD300 with both heads scaled by 1e-3, exported: scores spread around 1 / C (else
    every score is 1.0) and boxes near the default boxes (else most are clipped to nothing)."""
    torch.manual_seed(0)
    model = SSD300(num_classes=num_classes, backbone_weights=None)
    with torch.no_grad():
        for p in [*model.conf_heads.parameters(), *model.loc_heads.parameters()]:
            p.mul_(1e-3)
    export_weights(model, path, {"epoch": 0, "step": 0})
    return path


def _records(batches: list[tuple[torch.Tensor, ...]], gt: dict[str, Any]) -> list[dict[str, Any]]:
    """Detections as handed to the evaluator -> COCO records (xywh in original pixels; label i is
    the i-th category of the file)."""
    size = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    category = [c["id"] for c in gt["categories"]]
    records = []
    for image_ids, boxes, scores, labels, counts in batches:
        for i, image_id in enumerate(image_ids.tolist()):
            w, h = size[image_id]
            for j in range(int(counts[i])):
                left, top, right, bottom = boxes[i, j].double().tolist()
                records.append({
                    "image_id": image_id,
                    "category_id": category[int(labels[i, j]) - 1],
                    "bbox": [left * w, top * h, (right - left) * w, (bottom - top) * h],
                    "score": float(scores[i, j]),
                })  # fmt: skip
    return records


def test_printed_map_is_the_independent_score_of_the_detections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = generate_synthetic_coco(
        tmp_path / "syn", train_images=2, val_images=4, seed=3, categories="used", progress=False
    )
    val_json = root / "annotations" / "instances_val2017.json"
    gt = json.loads(val_json.read_text())
    weights = _graded_ssd300_weights(len(gt["categories"]) + 1, tmp_path / "best.pt")
    received: list[tuple[torch.Tensor, ...]] = []
    add = CocoEvaluator.add

    def spy(self: CocoEvaluator, *batch: torch.Tensor) -> None:
        received.append(tuple(t.detach().cpu().clone() for t in batch))
        add(self, *batch)

    monkeypatch.setattr(CocoEvaluator, "add", spy)
    args = ["--mode", "eval", "--weights", str(weights), "--data.root", str(root),
            "--data.eval-batch-size", "2", "--num-threads", "1"]  # fmt: skip
    assert main(args) == 0
    first = _records(received, gt)
    # ground truth: the two best-scored detections of each image that are real boxes
    annotations = []
    for image in gt["images"]:
        mine = [r for r in first if r["image_id"] == image["id"] and min(r["bbox"][2:]) > 4]
        for r in sorted(mine, key=lambda r: -r["score"])[:2]:
            area = r["bbox"][2] * r["bbox"][3]
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"],
                                "category_id": r["category_id"], "bbox": r["bbox"],
                                "area": area, "iscrowd": 0})  # fmt: skip
    assert len(annotations) >= 6
    made = {**gt, "annotations": annotations}
    made_json = tmp_path / "made.json"
    made_json.write_text(json.dumps(made))

    received.clear()
    capsys.readouterr()
    assert main([*args, "--data.val-annotations", str(made_json)]) == 0
    out = capsys.readouterr().out
    printed = [float(v) for v in re.findall(r"\] = (-?\d+\.\d{3})$", out, flags=re.M)]
    assert len(printed) == 12, out
    expected = pycocotools_stats(made, _records(received, made))
    assert 0.05 < expected[0] < 0.95  # neither nothing found nor everything
    assert printed == pytest.approx(expected, abs=5e-4 + 1e-9)
