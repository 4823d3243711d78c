"""One label map for data, evaluation and prediction (interfaces.md "Label map").

One json whose categories are listed out of id order and with gaps in the ids is fed to ssd_data
(the labels of the training/eval boxes), to ssd_eval as ssd_train composes it (detections with
contiguous labels -> COCO category ids, and their score) and to ssd-predict (the category id
written for each label); all three must give every label the category of the hand-written map.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ssd_data import CocoIndex, DataConfig, build_eval_loader
from ssd_eval import EvalConfig, load_ground_truth
from ssd_train.predict.predictor import predict_files
from ssd_train.predict.sources import label_map
from ssd_train.report.reporter import ground_truth_boxes
from ssd_train.validation import Evaluation
from torch import Tensor, nn

CATEGORIES = [
    {"id": 90, "name": "toothbrush"},
    {"id": 7, "name": "train"},
    {"id": 44, "name": "bottle"},
    {"id": 3, "name": "car"},
]
GOLDEN = {90: 1, 7: 2, 44: 3, 3: 4}  # written by hand: label = position in the file, from 1
SIZES = {1: (40, 60), 2: (50, 50), 3: (30, 80)}  # image id: (height, width)
BOXES = {  # image id: [(category id, [x, y, w, h]), ...], in file order
    1: [(3, [4, 4, 20, 10]), (90, [30, 10, 20, 20])],
    2: [(44, [10, 10, 20, 30]), (7, [0, 0, 50, 20]), (3, [25, 25, 10, 10])],
    3: [(7, [40, 5, 30, 20])],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labels")
    (root / "val").mkdir()
    images, annotations = [], []
    for image_id, (h, w) in SIZES.items():
        Image.new("RGB", (w, h), (image_id * 40, 90, 160)).save(root / "val" / f"{image_id}.jpg")
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        for category_id, bbox in BOXES[image_id]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": float(bbox[2] * bbox[3]),
                    "iscrowd": 0,
                }
            )
    gt = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "val.json").write_text(json.dumps(gt))
    return root


def _normalised(image_id: int, bbox: list[int]) -> list[float]:
    h, w = SIZES[image_id]
    x, y, bw, bh = bbox
    return [x / w, y / h, (x + bw) / w, (y + bh) / h]


def test_ssd_data_labels_each_box_by_the_file_order(dataset: Path) -> None:
    index = CocoIndex.from_json(dataset / "val.json", skip_empty=False, cache=False)
    assert index.label_to_category_id.tolist() == [0, 90, 7, 44, 3]
    assert index.num_classes == 5
    for i in range(index.num_images):
        boxes, labels, _ = index.annotations(i)
        expected = BOXES[index.image_id(i)]
        assert labels.tolist() == [GOLDEN[c] for c, _ in expected]
        np.testing.assert_allclose(
            boxes, [_normalised(index.image_id(i), b) for _, b in expected], atol=1e-6
        )


def test_evaluation_turns_each_label_into_its_category(dataset: Path) -> None:
    """Detections equal to the ground truth, labelled by GOLDEN: every row gets the category of
    its box and the score is perfect (any label mapped to another category would lower it)."""
    cfg = DataConfig(
        root=dataset,
        val_images=dataset / "val",
        val_annotations=dataset / "val.json",
        eval_batch_size=3,
        num_workers=0,
        cache_index=False,
        eval_all_images=True,
    )
    evaluation = Evaluation(
        build_eval_loader(cfg, 0, 1),
        dataset / "val.json",
        lambda loc, logits: None,
        EvalConfig(asynchronous=False),
        device=torch.device("cpu"),
        autocast_dtype=None,
        channels_last=False,
    )
    evaluator = evaluation.evaluator
    ids = sorted(BOXES)
    k = max(len(v) for v in BOXES.values())
    boxes, labels = torch.zeros(len(ids), k, 4), torch.zeros(len(ids), k, dtype=torch.int64)
    for row, image_id in enumerate(ids):
        for j, (category_id, bbox) in enumerate(BOXES[image_id]):
            boxes[row, j] = torch.tensor(_normalised(image_id, bbox))
            labels[row, j] = GOLDEN[category_id]
    counts = torch.tensor([len(BOXES[i]) for i in ids])
    scores = torch.ones(len(ids), k)
    # ssd_train's drawing of the ground truth labels the boxes the same way
    _, drawn = ground_truth_boxes(evaluator.gt, ids)
    assert torch.equal(drawn, labels)

    evaluator.add(torch.tensor(ids), boxes, scores, labels, counts)
    rows = evaluator.gather()
    assert rows is not None
    got = [(int(r[0]), int(r[6])) for r in rows]
    assert got == [(i, c) for i in ids for c, _ in BOXES[i]]
    evaluator.reset()
    evaluator.add(torch.tensor(ids), boxes, scores, labels, counts)
    result = evaluator.evaluate(epoch=0)
    assert result is not None and result.map == pytest.approx(1.0)
    evaluation.close()


class _Blank(nn.Module):
    """A model whose output does not matter: the post-processor below decides the detections."""

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros(images.shape[0], 8732, 4), torch.zeros(images.shape[0], 8732, 5)


def _one_detection_per_label(loc: Tensor, logits: Tensor) -> tuple[Tensor, ...]:
    """Every image gets labels 1..4 (score 0.9 .. 0.6), each box the whole image."""
    n = loc.shape[0]
    boxes = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(n, 4, 4).clone()
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6]).expand(n, 4).clone()
    labels = torch.arange(1, 5).expand(n, 4).clone()
    return boxes, scores, labels, torch.full((n,), 4)


@pytest.mark.parametrize("source", ["--gt", "weights' metadata"])
def test_ssd_predict_writes_each_labels_category(dataset: Path, source: str) -> None:
    if source == "--gt":
        labels = label_map({}, 5, load_ground_truth(dataset / "val.json"))
    else:
        labels = label_map({"categories": CATEGORIES}, 5)
    assert labels.names[1:] == [c["name"] for c in CATEGORIES]
    paths = [dataset / "val" / f"{i}.jpg" for i in sorted(SIZES)]
    result = predict_files(
        _Blank(),
        _one_detection_per_label,  # type: ignore[arg-type]
        labels,
        paths,
        sorted(SIZES),
        None,
        device=torch.device("cpu"),
        workers=1,
        draw=False,
    )
    by_score: dict[float, set[int]] = {}
    for record in result.records:
        by_score.setdefault(record["score"], set()).add(record["category_id"])
    inverse = {label: category_id for category_id, label in GOLDEN.items()}
    assert by_score == {0.9: {inverse[1]}, 0.8: {inverse[2]}, 0.7: {inverse[3]}, 0.6: {inverse[4]}}
    assert len(result.records) == 4 * len(paths)
