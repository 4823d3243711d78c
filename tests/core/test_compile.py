"""The whole device-side step (normalise, encode, forward, loss) under torch.compile(fullgraph=True)."""

from __future__ import annotations

import copy

import pytest
import torch
from ssd_core.box_coder import encode
from ssd_core.loss import SSDLoss, SSDLossOutput
from ssd_core.model import SSD300
from ssd_core.preprocess import normalize_images


@pytest.mark.slow
@pytest.mark.timeout(900)  # a hang guard
def test_compiled_step_matches_eager(generator) -> None:
    torch._dynamo.reset()
    model = SSD300(num_classes=81).train()
    eager_model = copy.deepcopy(model)
    criterion = SSDLoss()

    def step(
        net: SSD300, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
    ) -> tuple[SSDLossOutput, torch.Tensor, torch.Tensor]:
        loc_targets, label_targets = encode(boxes, labels)
        loc, logits = net(normalize_images(images))
        return criterion(loc, logits, loc_targets, label_targets), loc_targets, label_targets

    images = torch.randint(0, 256, (2, 3, 300, 300), dtype=torch.uint8, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    boxes = torch.tensor(
        [[[0.1, 0.2, 0.5, 0.7], [0.6, 0.1, 0.9, 0.4]], [[0.3, 0.3, 0.31, 0.32], [0, 0, 0, 0]]]
    )
    labels = torch.tensor([[3, 9], [5, 0]])

    # fullgraph: any graph break fails the test. Graphs and breaks are Dynamo's, whatever the
    # backend; aot_eager runs the captured (functionalised, decomposed) graph without Inductor's
    # kernel generation, minutes of CPU time here. Inductor's numerics are tested on the whole
    # train step (tests/train/test_compile.py).
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out, loc_targets, label_targets = compiled(model, images, boxes, labels)
    expected, eager_loc_targets, eager_label_targets = step(eager_model, images, boxes, labels)

    # Matching on the device inside the compiled region is exactly the eager matching.
    assert torch.equal(label_targets, eager_label_targets)
    torch.testing.assert_close(loc_targets, eager_loc_targets, rtol=1e-6, atol=1e-6)
    assert label_targets[1].gt(0).sum() == 1  # the tiny box got exactly its forced anchor
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert out.total.requires_grad
