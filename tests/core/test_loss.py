"""SSDLoss against a straightforward per-image implementation written here."""

from __future__ import annotations

import math

import pytest
import torch
from ssd_core.box_coder import encode
from ssd_core.loss import SSDLoss

from tests.helpers import mlperf_reference as ref


def per_image_loss(loc, logits, loc_targets, label_targets) -> tuple[float, float, float]:
    """Plain loop version of the reference Loss: returns (total, loc term, conf term) as floats."""
    n, a = label_targets.shape
    totals, locs, confs = [], [], []
    for i in range(n):
        pos = [j for j in range(a) if label_targets[i, j] > 0]
        if not pos:
            totals.append(0.0)
            locs.append(0.0)
            confs.append(0.0)
            continue
        loc_sum = 0.0
        for j in pos:
            for d in loc[i, j].double() - loc_targets[i, j].double():
                ad = abs(d.item())
                loc_sum += 0.5 * ad * ad if ad < 1.0 else ad - 0.5
        log_probs = torch.log_softmax(logits[i].double(), dim=-1)
        ce = [-log_probs[j, label_targets[i, j]].item() for j in range(a)]
        pos_set = set(pos)
        ce_neg = [0.0 if j in pos_set else ce[j] for j in range(a)]
        hardest = sorted(range(a), key=lambda j: ce_neg[j], reverse=True)[: min(3 * len(pos), a)]
        conf_sum = sum(ce[j] for j in pos) + sum(ce[j] for j in hardest)
        totals.append((loc_sum + conf_sum) / len(pos))
        locs.append(loc_sum / len(pos))
        confs.append(conf_sum / len(pos))
    return sum(totals) / n, sum(locs) / n, sum(confs) / n


@pytest.fixture
def batch(generator):
    boxes, labels = ref.random_ground_truth(generator, n=4, m=6, counts=[6, 1, 0, 3])
    loc_targets, label_targets = encode(boxes, labels)
    loc = torch.randn(4, 8732, 4, generator=generator)
    logits = 2 * torch.randn(4, 8732, 81, generator=generator)
    return loc, logits, loc_targets, label_targets


def test_matches_per_image_loop(batch) -> None:
    out = SSDLoss()(*batch)
    total, loc_term, conf_term = per_image_loss(*batch)
    assert out.total.dtype == torch.float32
    assert out.total.shape == () and out.loc.shape == () and out.conf.shape == ()
    assert out.total.item() == pytest.approx(total, rel=1e-5)
    assert out.loc.item() == pytest.approx(loc_term, rel=1e-5)
    assert out.conf.item() == pytest.approx(conf_term, rel=1e-5)
    assert out.total.item() == pytest.approx(out.loc.item() + out.conf.item(), rel=1e-6)


def test_image_without_positives_contributes_zero(batch) -> None:
    loc, logits, loc_targets, label_targets = batch
    assert not label_targets[2].any()
    full = SSDLoss()(loc, logits, loc_targets, label_targets).total
    others = SSDLoss()(
        loc[[0, 1, 3]], logits[[0, 1, 3]], loc_targets[[0, 1, 3]], label_targets[[0, 1, 3]]
    )
    # The mean runs over all 4 images, the empty one adding 0.
    assert full.item() == pytest.approx(others.total.item() * 3 / 4, rel=1e-6)
    empty = SSDLoss()(loc[[2]], logits[[2]], loc_targets[[2]], label_targets[[2]])
    assert empty.total.item() == 0.0 and math.isfinite(empty.total.item())


def test_many_positives_cap_negatives_at_anchor_count(generator) -> None:
    # 3 * num_pos > A: every anchor is a "negative" (positives then count twice, as in the reference).
    label_targets = torch.zeros(1, 8732, dtype=torch.int64)
    label_targets[0, :3000] = torch.randint(1, 81, (3000,), generator=generator)
    loc_targets = torch.randn(1, 8732, 4, generator=generator) * (label_targets > 0).unsqueeze(-1)
    loc = torch.randn(1, 8732, 4, generator=generator)
    logits = torch.randn(1, 8732, 81, generator=generator)
    out = SSDLoss()(loc, logits, loc_targets, label_targets)
    assert out.total.item() == pytest.approx(
        per_image_loss(loc, logits, loc_targets, label_targets)[0], rel=1e-5
    )


def test_bf16_predictions_are_computed_in_float32(batch) -> None:
    loc, logits, loc_targets, label_targets = batch
    out_bf16 = SSDLoss()(loc.bfloat16(), logits.bfloat16(), loc_targets, label_targets)
    out_ref = SSDLoss()(
        loc.bfloat16().float(), logits.bfloat16().float(), loc_targets, label_targets
    )
    assert out_bf16.total.dtype == torch.float32
    torch.testing.assert_close(out_bf16.total, out_ref.total)


def test_gradients_only_through_positive_regression(batch) -> None:
    loc, logits, loc_targets, label_targets = batch
    loc = loc.clone().requires_grad_(True)
    logits = logits.clone().requires_grad_(True)
    SSDLoss()(loc, logits, loc_targets, label_targets).total.backward()
    pos = label_targets > 0
    assert loc.grad[~pos].abs().sum() == 0
    assert loc.grad[pos].abs().sum() > 0
    # Classification gradient: positives and exactly min(3 * num_pos, A) hard negatives per image.
    touched = logits.grad.abs().sum(dim=-1) > 0
    for i in range(4):
        num_pos = int(pos[i].sum())
        assert int(touched[i].sum()) == num_pos + min(3 * num_pos, 8732)


def test_shape_mismatch_is_rejected(batch) -> None:
    loc, logits, loc_targets, label_targets = batch
    with pytest.raises(ValueError, match="SSDLoss"):
        SSDLoss()(loc[:, :100], logits, loc_targets, label_targets)
