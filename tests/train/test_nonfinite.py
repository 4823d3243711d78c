"""Non-finite loss: the run stops naming the step and the last checkpoint; no NaN checkpoint."""

from __future__ import annotations

import pytest
import torch
from ssd_train.checkpoint.files import list_checkpoints
from ssd_train.resilience.config import NonFiniteConfig
from ssd_train.resilience.nonfinite import NonFiniteSkipper, TooManyNonFiniteSteps
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.helpers import jobs as h


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_no_checkpoint_holds_nan(tmp_path):
    run = tmp_path / "run"
    cmd = h.harness_command(run, "--steps", "12", "--every", "3", nproc=0)
    done = h.run_job(cmd, env=h.harness_env(faults__nan_loss_at_step=4), timeout=120)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert (
        f"non-finite loss at step 4; last checkpoint: {run / 'checkpoints' / 'step-3'}"
        in done.stderr
    )
    infos = list_checkpoints(run)
    assert [i.step for i in infos] == [3] and infos[0].usable
    # read the checkpoint back independently of CheckpointManager: every tensor is finite
    dcp_to_torch_save(infos[0].path, tmp_path / "flat.pt")
    state = torch.load(tmp_path / "flat.pt", weights_only=True)
    tensors = [t for t in torch.utils._pytree.tree_leaves(state) if isinstance(t, torch.Tensor)]
    assert len(tensors) > 10 and all(
        torch.isfinite(t).all() for t in tensors if t.is_floating_point()
    )


def test_skip_policy_leaves_weights_and_momentum_untouched_and_counts():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    skipper = NonFiniteSkipper(opt, NonFiniteConfig(policy="skip", max_skipped=1))
    x = torch.randn(4, 3)

    model(x).sum().backward()
    opt.step()  # a finite step goes through
    opt.zero_grad()
    assert skipper.skipped == 0
    before = [p.detach().clone() for p in model.parameters()]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]

    (model(x).sum() * float("nan")).backward()
    opt.step()  # skipped: weight decay and momentum would otherwise still move the weights
    assert skipper.skipped == 1
    for p, b, m in zip(model.parameters(), before, momentum, strict=True):
        assert torch.equal(p, b) and torch.equal(opt.state[p]["momentum_buffer"], m)

    opt.zero_grad()
    (model(x).sum() * float("inf")).backward()
    with pytest.raises(TooManyNonFiniteSteps, match="2 optimiser steps had NaN/Inf"):
        opt.step()
    skipper.close()
