"""CheckpointManager in one process: round trip, torn folders, keep-k, refusals, async staging."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from ssd_train.checkpoint.files import MARKER, inspect_checkpoint, step_dir
from ssd_train.checkpoint.manager import (
    CheckpointConfig,
    CheckpointError,
    CheckpointManager,
    NonFiniteCheckpointError,
    Restored,
    ResumeMismatchError,
    apply_training_state,
    training_state,
)
from torch import nn


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    )


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        loss = model(torch.randn(2, 3, 8, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _setup(tmp_path, **cfg):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, 2)
    cfg.setdefault("asynchronous", False)
    mgr = CheckpointManager(CheckpointConfig(**cfg), tmp_path, fingerprint={"global_batch_size": 8})
    return model, opt, mgr


def _save(mgr, step, model, opt):
    state = training_state(model, opt, sched={"last": step}, data={"pos": step})
    return mgr.save(step, state, epoch=1)


def _resume(mgr, model, opt) -> Restored | None:
    """What the trainer does: load the checkpoint chosen by checkpoint.resume, apply it."""
    path = mgr.resume_path()
    if path is None:
        return None
    restored = mgr.load(path, training_state(model, opt))
    apply_training_state(model, opt, restored.state)
    return restored


def test_round_trip_restores_weights_optimiser_rng_and_state(tmp_path):
    model, opt, mgr = _setup(tmp_path)
    random.seed(5)
    np.random.seed(5)
    path = _save(mgr, 4, model, opt)
    expected_params = {k: v.clone() for k, v in model.state_dict().items()}
    expected_momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    draws = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])

    _train(model, opt, 3)  # move everything away from the saved state
    torch.manual_seed(99)
    other = CheckpointManager(
        CheckpointConfig(asynchronous=False), tmp_path, fingerprint={"global_batch_size": 8}
    )
    restored = _resume(other, model, opt)

    assert (
        restored is not None
        and restored.path == path
        and restored.step == 4
        and restored.epoch == 1
    )
    assert restored.state["sched"] == {"last": 4} and restored.state["data"] == {"pos": 4}
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected_params[k]), k
    for p, m in zip(model.parameters(), expected_momentum, strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], m)
    assert torch.equal(torch.rand(3), draws[0])
    assert np.array_equal(np.random.rand(3), draws[1])
    assert [random.random() for _ in range(3)] == draws[2]


def test_torn_checkpoints_are_skipped_for_the_previous_one(tmp_path):
    model, opt, mgr = _setup(tmp_path, keep=5)
    for step in (2, 4, 6):
        _save(mgr, step, model, opt)
    (step_dir(tmp_path, 6) / MARKER).unlink()  # marker missing: the save never finished
    distcp = next(step_dir(tmp_path, 4).glob("*.distcp"))
    distcp.write_bytes(distcp.read_bytes()[:-10])  # truncated file, marker present

    assert "marker" in inspect_checkpoint(step_dir(tmp_path, 6)).problem
    assert "bytes" in inspect_checkpoint(step_dir(tmp_path, 4)).problem
    assert mgr.resume_path() == step_dir(tmp_path, 2)
    assert _resume(mgr, model, opt).step == 2

    explicit = CheckpointConfig(asynchronous=False, resume=str(step_dir(tmp_path, 4)))
    with pytest.raises(CheckpointError, match=r"has .* bytes, the marker lists"):
        CheckpointManager(explicit, tmp_path).resume_path()


def test_keeps_only_the_latest_k(tmp_path):
    model, opt, mgr = _setup(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        _save(mgr, step, model, opt)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-3", "step-4"]


def test_resume_refuses_changed_global_batch(tmp_path):
    model, opt, mgr = _setup(tmp_path)
    _save(mgr, 2, model, opt)
    changed = CheckpointManager(
        CheckpointConfig(asynchronous=False), tmp_path, fingerprint={"global_batch_size": 16}
    )
    with pytest.raises(ResumeMismatchError, match=r"global_batch_size: checkpoint 8, now 16"):
        _resume(changed, model, opt)


def test_resume_refuses_a_world_size_change_with_an_explanation(tmp_path):
    model, opt, mgr = _setup(tmp_path)
    path = _save(mgr, 2, model, opt)
    marker = json.loads((path / MARKER).read_text())
    marker["world_size"] = 4  # as if written by 4 ranks
    (path / MARKER).write_text(json.dumps(marker))
    with pytest.raises(
        ResumeMismatchError, match=r"written by 4 ranks, this run has 1.*data-loader position"
    ):
        _resume(mgr, model, opt)


def test_resume_never_refuses_a_folder_with_checkpoints(tmp_path):
    model, opt, mgr = _setup(tmp_path)
    assert CheckpointManager(CheckpointConfig(resume="never"), tmp_path).resume_path() is None
    _save(mgr, 2, model, opt)
    with pytest.raises(CheckpointError, match="already holds 1 checkpoint"):
        CheckpointManager(CheckpointConfig(resume="never"), tmp_path).resume_path()


def test_never_writes_a_checkpoint_with_nan_weights(tmp_path):
    model, opt, mgr = _setup(tmp_path)
    _save(mgr, 2, model, opt)
    with torch.no_grad():
        model[3].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteCheckpointError, match=r"step 3.*Last good checkpoint: .*step-2"):
        _save(mgr, 3, model, opt)
    assert not step_dir(tmp_path, 3).exists()


def test_refuses_state_that_weights_only_load_could_not_read(tmp_path):
    model, opt, mgr = _setup(tmp_path)
    with pytest.raises(CheckpointError, match=r"per_rank\['data'\]\['order'\] \(a numpy.ndarray\)"):
        mgr.save(2, training_state(model, opt, data={"order": np.arange(3)}))


def test_disabled_manager_writes_nothing(tmp_path):
    model, opt, _ = _setup(tmp_path)
    mgr = CheckpointManager(CheckpointConfig(enabled=False), tmp_path)
    assert not mgr.due(1000)
    assert _save(mgr, 1000, model, opt) is None and not (tmp_path / "checkpoints").exists()


def test_async_save_is_a_snapshot_taken_when_save_returns(tmp_path):
    model, opt, mgr = _setup(tmp_path, asynchronous=True)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    path = _save(mgr, 2, model, opt)
    with torch.no_grad():  # training goes on while the writer thread works
        for p in model.parameters():
            p.add_(1.0)
    mgr.wait()
    assert inspect_checkpoint(path).usable
    fresh, fresh_opt = _model(), None
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    _train(fresh, fresh_opt, 1)
    loader = CheckpointManager(
        CheckpointConfig(asynchronous=False), tmp_path, fingerprint={"global_batch_size": 8}
    )
    apply_training_state(
        fresh, fresh_opt, loader.load(path, training_state(fresh, fresh_opt)).state
    )
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, expected[k]), k


@pytest.mark.parametrize("part", ["trainer.pt", "rank-0.pt"])
def test_damaged_part_of_a_complete_checkpoint_is_one_message(tmp_path, part: str) -> None:
    """Bytes torch cannot read, of the size COMPLETE lists (so the folder looks whole)."""
    from tests.helpers.torch_files import BAD_TORCH_BYTES

    model, opt, mgr = _setup(tmp_path)
    path = _save(mgr, 4, model, opt)
    target = path / part
    bad = BAD_TORCH_BYTES[IndexError]
    target.write_bytes((bad * (target.stat().st_size // len(bad) + 1))[: target.stat().st_size])
    assert inspect_checkpoint(path).usable
    with pytest.raises(CheckpointError) as info:
        mgr.load(path, training_state(model, opt))
    message = str(info.value)
    assert message.startswith(f"{target} is not a readable checkpoint file: torch cannot read it")
    assert "checkpoint.resume=PATH" in message and len(message.splitlines()) == 1
    mgr.close()
