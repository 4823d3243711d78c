"""PostProcessor against a per-image, per-class greedy-NMS loop (reference decode_single) written here."""

from __future__ import annotations

import pytest
import torch
from ssd_core.anchors import default_boxes
from ssd_core.postprocess import (
    Detections,
    PostProcessor,
    greedy_nms,
    matrix_nms,
    torchvision_single_nms,
)

BACKENDS = ["matrix", "greedy", "torchvision_single", "torchvision"]


def _iou(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    lt = torch.max(boxes[:, :2], box[:2])
    rb = torch.min(boxes[:, 2:], box[2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


def reference_decode_single(
    boxes, probs, threshold=0.05, criteria=0.5, max_num=200, max_output=200
):
    """Reference decode_single for one image: boxes [A, 4] ltrb, probs [A, C] -> list of (label, score, box)."""
    out = []
    for label in range(1, probs.shape[1]):
        score = probs[:, label]
        mask = score > threshold
        cand_boxes, cand_scores = boxes[mask], score[mask]
        if cand_scores.numel() == 0:
            continue
        order = cand_scores.argsort()[-max_num:].tolist()  # ascending, the best last
        while order:
            best = order.pop()
            out.append((label, cand_scores[best].item(), cand_boxes[best]))
            if order:
                ious = _iou(cand_boxes[order], cand_boxes[best])
                order = [o for o, iou in zip(order, ious.tolist(), strict=True) if iou < criteria]
    out.sort(key=lambda d: d[1])
    return out[-max_output:]


def _reference_boxes(loc: torch.Tensor) -> torch.Tensor:
    """Decode written here: cxy = 0.1 * p * a_wh + a_cxy, wh = exp(0.2 * p) * a_wh, to ltrb."""
    anchors = default_boxes("xywh", dtype=torch.float64)
    cxy = (0.1 * loc[..., :2] * anchors[:, 2:] + anchors[:, :2]).float()
    wh = ((0.2 * loc[..., 2:]).exp() * anchors[:, 2:]).float()
    return torch.cat((cxy - wh / 2, cxy + wh / 2), dim=-1)


def _assert_same(dets: Detections, loc: torch.Tensor, logits: torch.Tensor, **kwargs) -> None:
    boxes = _reference_boxes(loc)
    probs = torch.softmax(logits.float(), dim=-1)
    for i in range(loc.shape[0]):
        expected = reference_decode_single(boxes[i], probs[i], **kwargs)
        count = int(dets.counts[i])
        assert count == len(expected), f"image {i}: {count} detections, reference {len(expected)}"
        got = sorted(
            zip(
                dets.labels[i, :count].tolist(),
                dets.scores[i, :count].tolist(),
                dets.boxes[i, :count],
                strict=True,
            ),
            key=lambda d: (d[0], d[1]),
        )
        want = sorted(expected, key=lambda d: (d[0], d[1]))
        assert [g[0] for g in got] == [w[0] for w in want]
        assert [g[1] for g in got] == pytest.approx([w[1] for w in want], rel=1e-6)
        if count:
            torch.testing.assert_close(
                torch.stack([g[2] for g in got]), torch.stack([w[2] for w in want])
            )
        # Scores descending, padding rows zero.
        assert torch.all(dets.scores[i, : max(count - 1, 0)] >= dets.scores[i, 1 : max(count, 1)])
        assert not dets.scores[i, count:].any() and not dets.boxes[i, count:].any()
        assert not dets.labels[i, count:].any()


@pytest.fixture
def outputs(generator):
    n, c = 3, 6
    loc = 0.5 * torch.randn(n, 8732, 4, generator=generator)
    logits = 3 * torch.randn(n, 8732, c, generator=generator)
    logits[1, :, 0] += 4  # fewer candidates
    logits[2, :, 0] = 50  # background everywhere: no candidate above 0.05
    return loc, logits


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_reference_loop(outputs, backend: str) -> None:
    loc, logits = outputs
    dets = PostProcessor(nms_backend=backend)(loc, logits)
    assert dets.boxes.shape == (3, 200, 4) and dets.boxes.dtype == torch.float32
    assert dets.scores.shape == (3, 200) and dets.labels.dtype == torch.int64
    assert dets.counts.dtype == torch.int64
    assert dets.counts[0] == 200  # the per-image cap is exercised
    assert dets.counts[1] > 0
    assert dets.counts[2] == 0
    _assert_same(dets, loc, logits)


@pytest.mark.parametrize("backend", ["matrix", "torchvision_single"])
def test_other_thresholds_match_reference(outputs, backend: str) -> None:
    loc, logits = outputs
    dets = PostProcessor(
        score_threshold=0.2,
        nms_iou_threshold=0.3,
        topk_per_class=50,
        max_detections=60,
        nms_backend=backend,
    )(loc, logits)
    assert dets.boxes.shape == (3, 60, 4)
    _assert_same(dets, loc, logits, threshold=0.2, criteria=0.3, max_num=50, max_output=60)


def test_bf16_inputs_and_empty_batch(outputs) -> None:
    loc, logits = outputs
    dets = PostProcessor()(loc.bfloat16(), logits.bfloat16())
    assert dets.scores.dtype == torch.float32
    _assert_same(dets, loc.bfloat16().float(), logits.bfloat16().float())
    empty = PostProcessor()(loc[2:], logits[2:])
    assert empty.counts.tolist() == [0] and not empty.scores.any()


def test_greedy_nms_by_hand() -> None:
    # Group 0: IoU(0, 1) is exactly 0.5, so box 1 goes (the reference keeps only IoU < 0.5);
    # box 2 overlaps only box 1 (IoU 0.5), which is suppressed, so box 2 stays (greedy chain).
    # Group 1: box 0 is not valid, so box 1 (IoU 0.5 with it) stays; box 2 is far away.
    group = [[0.0, 0.0, 0.3, 0.1], [0.0, 0.0, 0.15, 0.1], [0.0, 0.0, 0.075, 0.1]]
    boxes = torch.tensor([group, group])
    boxes[1, 2] = torch.tensor([0.5, 0.5, 0.6, 0.6])
    valid = torch.tensor([[True, True, True], [False, True, True]])
    assert _iou(boxes[0, 1:2], boxes[0, 0]).item() == 0.5
    assert _iou(boxes[0, 2:3], boxes[0, 1]).item() == 0.5
    for nms in (greedy_nms, matrix_nms, torchvision_single_nms):
        keep = nms(boxes, valid, 0.5)
        assert keep.tolist() == [[True, False, True], [False, True, True]], nms.__name__
        # A threshold above 0.5 keeps every valid box.
        assert nms(boxes, valid, 0.51).tolist() == valid.tolist(), nms.__name__


def test_long_suppression_chain() -> None:
    # Unit boxes shifted by 0.3: neighbours overlap with IoU 0.7 / 1.3 > 0.5, boxes two apart
    # with 0.4 / 1.6 < 0.5. Greedy keeps ranks 0, 2, 4, ... (each kept box removes the next);
    # the fixed point needs ~K steps, far more than one convergence check.
    k = 40
    left = 0.3 * torch.arange(k, dtype=torch.float32)
    chain = torch.stack((left, torch.zeros(k), left + 1, torch.ones(k)), dim=-1)
    boxes = torch.stack((chain, chain.flip(0)))  # group 1: the same boxes in reverse rank order
    valid = torch.ones(2, k, dtype=torch.bool)
    valid[1, 0] = False  # group 1: rank 0 absent, so ranks 1, 3, 5, ... stay
    expected = torch.zeros(2, k, dtype=torch.bool)
    expected[0, 0::2] = True
    expected[1, 1::2] = True
    for nms in (greedy_nms, matrix_nms, torchvision_single_nms):
        assert torch.equal(nms(boxes, valid, 0.5), expected), nms.__name__
    assert torch.equal(matrix_nms(boxes, valid, 0.5, check_every=1), expected)


def test_torchvision_backend_gives_the_same_detections(outputs) -> None:
    loc, logits = outputs
    greedy = PostProcessor()(loc, logits)
    tv = PostProcessor(nms_backend="torchvision")(loc, logits)
    assert torch.equal(greedy.counts, tv.counts)
    _assert_same(tv, loc, logits)
    assert PostProcessor().nms_backend == "matrix"  # the default
    with pytest.raises(ValueError, match="nms_backend"):
        PostProcessor(nms_backend="fast")  # type: ignore[arg-type]


def test_more_detections_than_candidates_pads() -> None:
    # 2 classes x top-3 = 6 candidates < max_detections = 10: zero padding after them.
    loc = torch.zeros(1, 8732, 4)
    logits = torch.zeros(1, 8732, 3)
    logits[0, :, 0] = 10.0  # background everywhere, except:
    logits[0, [0, 40, 80, 120, 160], 1] = torch.tensor([12.0, 13.0, 14.0, 15.0, 16.0])
    logits[0, [2000, 3000, 4000, 5000], 2] = torch.tensor([11.0, 12.0, 13.0, 14.0])
    dets = PostProcessor(topk_per_class=3, max_detections=10)(loc, logits)
    assert dets.boxes.shape == (1, 10, 4)
    assert dets.counts.tolist() == [6]
    _assert_same(dets, loc, logits, max_num=3, max_output=10)


def test_shape_mismatch_is_rejected(outputs) -> None:
    loc, logits = outputs
    with pytest.raises(ValueError, match="PostProcessor"):
        PostProcessor()(loc[:, :10], logits)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_boxes_are_dropped(bad: float) -> None:
    # A diverged model: anchor 40's size offset overflows exp() (or is NaN). Its confident class-1
    # score must not turn into a non-finite detection; the other candidates stay.
    loc = torch.zeros(1, 8732, 4)
    loc[0, 40, 2:] = bad
    logits = torch.zeros(1, 8732, 3)
    logits[0, :, 0] = 10.0
    logits[0, [0, 40], 1] = torch.tensor([12.0, 16.0])
    dets = PostProcessor()(loc, logits)
    assert dets.counts.tolist() == [1]
    assert torch.isfinite(dets.boxes).all()
    expected = default_boxes("ltrb")[0]
    assert torch.allclose(dets.boxes[0, 0], expected, atol=1e-6)
    assert dets.labels[0, 0].item() == 1


def test_matrix_nms_equals_torchvision_nms_on_600_random_groups_of_200(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Evaluation batches beyond one workspace (81 classes x more than 55 images at k = 200; here
    a workspace of 200 groups): the suppression matrix is built in several chunks of groups, and
    every group's keep mask equals torchvision's NMS (an independent implementation) run on that
    group alone."""
    from ssd_core import postprocess
    from torchvision.ops import nms

    chunks: list[int] = []
    build = postprocess._suppression_matrix

    def spy(boxes: torch.Tensor, iou_threshold: float, chunk: int) -> torch.Tensor:
        chunks.append(chunk)
        return build(boxes, iou_threshold, chunk)

    monkeypatch.setattr(postprocess, "_suppression_matrix", spy)
    g, k = 600, 200
    gen = torch.Generator().manual_seed(24)
    centre = torch.rand(g, k, 2, generator=gen) * 0.5 + 0.25  # crowded: long suppression chains
    size = torch.rand(g, k, 2, generator=gen) * 0.25 + 0.02
    boxes = torch.cat((centre - size / 2, centre + size / 2), dim=-1)
    valid = torch.rand(g, k, generator=gen) < 0.85
    keep = matrix_nms(boxes, valid, 0.5, workspace_bytes=200 * (k * k * 4 * 3))
    assert len(chunks) == 1 and g > 2 * chunks[0]  # at least three chunks of groups
    scores = torch.arange(k, 0, -1, dtype=torch.float32)  # rank order = score order
    for i in range(g):
        index = valid[i].nonzero().squeeze(1)
        expected = torch.zeros(k, dtype=torch.bool)
        expected[index[nms(boxes[i, index], scores[index], 0.5)]] = True
        assert torch.equal(keep[i], expected), i
    kept, candidates = int(keep.sum()), int(valid.sum())
    assert 0.05 * candidates < kept < 0.9 * candidates  # suppression really happened, not all


def _random_outputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD outputs for ``n`` images and COCO's 81 classes, with many candidates above 0.05."""
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(n, 8732, 4, generator=g), 3 * torch.randn(n, 8732, 81, generator=g)


def test_ops_per_batch_do_not_grow_with_the_batch_and_one_sync() -> None:
    """Evaluation post-processing at batch 8 and 32 (COCO's 81 classes): the aten operations of a
    batch stay within 15 % (each kernel covers the whole batch) and at most one host sync, the
    matrix NMS convergence check."""
    from ssd_data.device.op_count import ops_of

    post = PostProcessor()
    counts = {n: ops_of(lambda n=n: post(*_random_outputs(n, n))) for n in (8, 32)}
    assert counts[32].ops <= 1.15 * counts[8].ops, (counts[8].ops, counts[32].ops)
    for n, count in counts.items():
        assert count.syncs <= 1, (n, count.sync_names())


def test_matrix_nms_in_chunks_and_with_any_check_interval_equals_greedy(generator) -> None:
    """Chunking the suppression matrix (a tiny workspace: one group per chunk, or a few) and the
    convergence check interval change nothing: the same keep mask as the rank-by-rank loop."""
    g, k = 12, 30
    centre = torch.rand(g, k, 2, generator=generator)
    size = 0.05 + 0.3 * torch.rand(g, k, 2, generator=generator)
    boxes = torch.cat((centre - size / 2, centre + size / 2), dim=-1)
    valid = torch.rand(g, k, generator=generator) > 0.2
    expected = greedy_nms(boxes, valid, 0.5)
    assert 0 < int(expected.sum()) < int(valid.sum())  # some boxes suppressed, some kept
    pair_bytes = k * k * 4 * 3
    for workspace in (1, 5 * pair_bytes, 2**31):  # 12 chunks, 3 chunks, one
        for check_every in (1, 2, 4, 8, k):
            keep = matrix_nms(boxes, valid, 0.5, check_every=check_every, workspace_bytes=workspace)
            assert torch.equal(keep, expected), (workspace, check_every)


def test_default_backend_equals_the_greedy_loop_on_81_classes() -> None:
    """The whole post-processing with the default (matrix) backend gives bit for bit the tensors
    of the rank-by-rank greedy backend on a COCO-sized batch."""
    loc, logits = _random_outputs(2, 7)
    matrix = PostProcessor()(loc, logits)
    greedy = PostProcessor(nms_backend="greedy")(loc, logits)
    for name, a, b in zip(Detections._fields, matrix, greedy, strict=True):
        assert torch.equal(a, b), name
