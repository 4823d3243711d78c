"""`ssd-predict --export`: ONNX (onnxruntime, CPU) and torch.export programs match eager outputs.

Tolerances: the torch.export program runs the same ATen kernels as eager, so raw outputs must agree
to 1e-5 (absolute and relative) and post-processed detections exactly in labels and counts.
onnxruntime uses its own convolution kernels (different summation order over the 20M weights):
raw outputs agree to atol 2e-3 + rtol 1e-3 (measured max |diff| ~7e-4 on outputs of magnitude ~1-10).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ssd_core.model import SSD300
from ssd_core.postprocess import PostProcessor
from ssd_train.checkpoint.weights import export_weights
from ssd_train.predict.cli import main

NUM_CLASSES = 4
TOPK = 8  # post-processing exports unroll one NMS step per rank: small k keeps the test fast


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = SSD300(num_classes=NUM_CLASSES, backbone_weights=None)
    settings = {"model": {"num_classes": NUM_CLASSES, "topk_per_class": TOPK, "max_detections": 6}}
    path = tmp_path_factory.mktemp("w") / "best.pt"
    export_weights(model, path, {"settings": settings})
    return path


def _eager(weights: Path) -> SSD300:
    model = SSD300(num_classes=NUM_CLASSES, backbone_weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True)["model"])
    return model.eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 300, 300, generator=torch.Generator().manual_seed(seed))


def _export(weights: Path, out: Path, fmt: str, *extra: str) -> Path:
    assert main(["--weights", str(weights), "--export", fmt, "--out", str(out), *extra]) == 0
    assert out.is_file()
    return out


def test_pt2_raw_outputs_match_eager_at_two_batch_sizes(weights: Path, tmp_path: Path) -> None:
    program = torch.export.load(_export(weights, tmp_path / "m.pt2", "pt2")).module()
    model = _eager(weights)
    for n, seed in ((1, 1), (3, 2)):  # the batch dimension is dynamic
        x = _images(n, seed)
        with torch.no_grad():
            loc, logits = program(x)
            ref_loc, ref_logits = model(x)
        assert loc.shape == (n, 8732, 4) and logits.shape == (n, 8732, NUM_CLASSES)
        torch.testing.assert_close(loc, ref_loc, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # ~15 s alone, 35 s on the shared 2 cores (unrolled NMS in the export)
def test_pt2_with_postprocess_matches_eager_detections(weights: Path, tmp_path: Path) -> None:
    out = _export(weights, tmp_path / "pp.pt2", "pt2", "--postprocess", "--score-threshold", "0.2")
    program = torch.export.load(out).module()
    model = _eager(weights)
    # Eager reference with the default (matrix) NMS backend: the export runs greedy NMS.
    post = PostProcessor(score_threshold=0.2, topk_per_class=TOPK, max_detections=6)
    x = _images(2, 3)
    with torch.no_grad():
        boxes, scores, labels, counts = program(x)
        ref = post(*model(x))
    assert boxes.shape == (2, 6, 4) and counts.shape == (2,)
    assert int(ref.counts.sum()) > 0  # something to compare
    torch.testing.assert_close(counts, ref.counts, rtol=0, atol=0)
    torch.testing.assert_close(labels, ref.labels, rtol=0, atol=0)
    torch.testing.assert_close(scores, ref.scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(boxes, ref.boxes, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # the ONNX (dynamo) export takes ~30 s on 2 cores
def test_onnx_raw_outputs_match_eager_in_onnxruntime(weights: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    out = _export(weights, tmp_path / "m.onnx", "onnx")
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    opset = {o.domain: o.version for o in proto.opset_import}[""]
    assert opset >= 17
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["loc", "logits"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = _eager(weights)
    for n, seed in ((1, 4), (2, 5)):
        x = _images(n, seed)
        loc, logits = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref_loc, ref_logits = model(x)
        np.testing.assert_allclose(loc, ref_loc.numpy(), atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(logits, ref_logits.numpy(), atol=2e-3, rtol=1e-3)


def test_export_to_a_folder_is_refused(weights: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--weights", str(weights), "--export", "pt2", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
