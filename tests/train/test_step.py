"""The one train step: micro-batch weighting, clipping, non-finite flag, loss composition, layouts,
tensor learning rates and the state-preserving warm-up."""

from __future__ import annotations

import pytest
import torch
from ssd_core.box_coder import encode
from ssd_core.loss import SSDLoss
from ssd_core.preprocess import normalize_images
from ssd_train.benchmark import synthetic_batch
from ssd_train.lr_schedule import LRSchedule
from ssd_train.optim import build_optimizer
from ssd_train.train_step import StepOutput, TrainStep, ensure_momentum_buffers
from ssd_train.trainer_config import OptimConfig
from torch import Tensor, nn

A, C = 8732, 5
CPU = torch.device("cpu")


class ToyDetector(nn.Module):
    """No BatchNorm, so a batch's loss is exactly the image-mean of per-image losses."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, A * (4 + C))
        self.seen_channels_last: list[bool] = []

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.seen_channels_last.append(
            x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        )
        out = self.head(x.mean(dim=(2, 3))).view(x.shape[0], A, 4 + C)
        return out[..., :4], out[..., 4:]


def _batch(n: int, seed: int):
    return synthetic_batch(n, 6, C, CPU, boxes_per_image=3, seed=seed)


def _step(model: nn.Module, clip: float | None = None, momentum: float = 0.9) -> TrainStep:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=momentum, weight_decay=1e-4)
    return TrainStep(model, SSDLoss(), opt, device=CPU, grad_clip_norm=clip)


def _cat(a, b):
    return type(a)(*(torch.cat([x, y]) for x, y in zip(a, b, strict=True)))


def test_micro_batches_are_weighted_by_their_share_of_images() -> None:
    a, b = _batch(2, 1), _batch(1, 2)
    torch.manual_seed(0)
    split = ToyDetector()
    joined = ToyDetector()
    joined.load_state_dict(split.state_dict())
    s1, s2 = _step(split), _step(joined)
    for _ in range(2):
        m_split = s1([a, b])  # shares 2/3 and 1/3
        m_joined = s2([_cat(a, b)])
    assert float(m_split.loss) == pytest.approx(float(m_joined.loss), rel=1e-5)
    assert float(m_split.loc) == pytest.approx(float(m_joined.loc), rel=1e-5)
    for p, q in zip(split.parameters(), joined.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(split.head.bias, ToyDetector().head.bias)


def test_step_loss_is_ssdloss_of_encoded_targets() -> None:
    batch = _batch(2, 3)
    torch.manual_seed(0)
    model = ToyDetector()
    x = normalize_images(batch.images)
    with torch.no_grad():
        loc, logits = model(x)
    loc_t, lab_t = encode(batch.boxes, batch.labels)
    expected = SSDLoss()(loc, logits, loc_t, lab_t)
    metrics = _step(model)([batch])
    assert float(metrics.loss) == pytest.approx(float(expected.total), rel=1e-5)
    assert float(metrics.conf) == pytest.approx(float(expected.conf), rel=1e-5)
    assert float(metrics.loss) == pytest.approx(float(metrics.loc) + float(metrics.conf), rel=1e-5)


def test_gradient_clipping_bounds_the_first_update() -> None:
    torch.manual_seed(0)
    model = ToyDetector()
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(
        model,
        SSDLoss(),
        torch.optim.SGD(model.parameters(), lr=0.5),
        device=CPU,
        grad_clip_norm=1e-3,
    )
    metrics = step([_batch(2, 4)])
    assert float(metrics.grad_norm) > 1e-3  # the raw norm is reported, before clipping
    update = torch.cat(
        [(p.detach() - q).flatten() for p, q in zip(model.parameters(), before, strict=True)]
    )
    assert float(update.norm()) == pytest.approx(0.5 * 1e-3, rel=1e-3)  # lr * max_norm


def test_non_finite_loss_is_flagged_on_the_device() -> None:
    class NaNDetector(ToyDetector):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            loc, logits = super().forward(x)
            return loc * float("nan"), logits

    metrics = _step(NaNDetector())([_batch(2, 5)])
    assert metrics.finite.dtype == torch.bool and metrics.finite.device == CPU
    assert not bool(metrics.finite)
    assert bool(_step(ToyDetector())([_batch(2, 5)]).finite)


def test_images_reach_the_model_channels_last() -> None:
    model = ToyDetector()
    batch = _batch(2, 6)
    batch = type(batch)(batch.images.contiguous(), *batch[1:])  # NCHW in
    _step(model)([batch])
    assert model.seen_channels_last == [True]


def test_empty_step_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one micro-batch"):
        _step(ToyDetector())([])


class BNDetector(ToyDetector):
    """With BatchNorm: running statistics and ``num_batches_tracked`` change on every step."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward(self.bn(x))


def _train(warm_up: bool, steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = BNDetector()
    opt = build_optimizer(model, OptimConfig(grad_clip_norm=None), CPU)
    step = TrainStep(model, SSDLoss(), opt, device=CPU, grad_clip_norm=2.0)
    schedule = LRSchedule(base_lr=0.05, warmup_iterations=2)
    if warm_up:
        step.warm_up(_batch(3, 99), micro_batches=2)
    for i in range(steps):
        schedule.apply(opt, i)
        out = step([_batch(2, 10 + i), _batch(1, 20 + i)])
    assert isinstance(out, StepOutput)
    return model, opt


def test_warm_up_leaves_training_bitwise_unchanged() -> None:
    warm, warm_opt = _train(warm_up=True)
    cold, cold_opt = _train(warm_up=False)
    for (name, a), b in zip(warm.state_dict().items(), cold.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # weights, BN running stats, num_batches_tracked
    for p, q in zip(warm.parameters(), cold.parameters(), strict=True):
        assert torch.equal(
            warm_opt.state[p]["momentum_buffer"], cold_opt.state[q]["momentum_buffer"]
        )
    assert warm.bn.num_batches_tracked.item() == 6  # 3 steps x 2 micro-batches, none from warm-up


def test_warm_up_restores_the_state_it_changes() -> None:
    torch.manual_seed(0)
    model = BNDetector()
    opt = build_optimizer(model, OptimConfig(), CPU)
    lrs = [g["lr"] for g in opt.param_groups]
    step = TrainStep(model, SSDLoss(), opt, device=CPU)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    step.warm_up(_batch(2, 1))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert [g["lr"] for g in opt.param_groups] == lrs  # the same tensor objects
    assert all(float(g["lr"]) == 0.0 for g in opt.param_groups)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(float(s["momentum_buffer"].abs().sum()) == 0 for s in opt.state.values())


def test_learning_rate_is_a_device_tensor_filled_by_the_schedule() -> None:
    torch.manual_seed(0)
    model = ToyDetector()
    opt = build_optimizer(model, OptimConfig(momentum=0.0, weight_decay=0.0), CPU)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, Tensor) and lr.dim() == 0 and lr.device == CPU
    LRSchedule(base_lr=0.25).apply(opt, 0)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 0.25
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(model, SSDLoss(), opt, device=CPU)
    step([_batch(2, 7)])
    grads = torch.autograd.grad(  # plain SGD by hand: p - lr * grad at the old weights
        _reference_loss(before, _batch(2, 7)), before
    )
    for p, q, g in zip(model.parameters(), before, grads, strict=True):
        torch.testing.assert_close(p.detach(), q - 0.25 * g, rtol=1e-5, atol=1e-7)


def _reference_loss(params: list[Tensor], batch) -> Tensor:
    weight, bias = (t.requires_grad_() for t in params)
    x = normalize_images(batch.images).mean(dim=(2, 3))
    out = torch.nn.functional.linear(x, weight, bias).view(x.shape[0], A, 4 + C)
    loc_t, lab_t = encode(batch.boxes, batch.labels)
    return SSDLoss()(out[..., :4], out[..., 4:], loc_t, lab_t).total


def test_zero_momentum_buffers_give_the_first_sgd_step() -> None:
    torch.manual_seed(0)
    a, b = ToyDetector(), ToyDetector()
    b.load_state_dict(a.state_dict())
    opts = [build_optimizer(m, OptimConfig(), CPU) for m in (a, b)]
    ensure_momentum_buffers(opts[0])
    for opt, model in zip(opts, (a, b), strict=True):
        LRSchedule(base_lr=0.1).apply(opt, 0)
        TrainStep(model, SSDLoss(), opt, device=CPU)([_batch(2, 3)])
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_optimizer_step_hooks_still_run() -> None:
    """The ``skip`` non-finite policy is a step pre-hook: the step must go through it."""
    torch.manual_seed(0)
    model = ToyDetector()
    opt = build_optimizer(model, OptimConfig(), CPU)
    LRSchedule(base_lr=0.1).apply(opt, 0)
    calls: list[int] = []

    def drop_update(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        calls.append(1)
        for p in model.parameters():
            p.grad = None

    opt.register_step_pre_hook(drop_update)
    before = [p.detach().clone() for p in model.parameters()]
    TrainStep(model, SSDLoss(), opt, device=CPU)([_batch(2, 8)])
    assert calls == [1]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_compiled_update_has_no_graph_break_and_the_eager_step_no_host_sync() -> None:
    """The update region is one Dynamo graph (Dynamo does not trace SGD's fused kernel, so the
    compiled update must use foreach), and the same step run eagerly for a count makes no host
    sync (the eager update uses the fused kernel, which reads the tensor LR on the device)."""
    from ssd_train.benchmark import compile_counts, count_step
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)

    class Head(nn.Module):  # ToyDetector without its side effect (a recompile per call)
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, A * (4 + C))

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            out = self.head(x.mean(dim=(2, 3))).view(x.shape[0], A, 4 + C)
            return out[..., :4], out[..., 4:]

    model = Head()
    opt = build_optimizer(model, OptimConfig(), CPU)
    LRSchedule(base_lr=0.1).apply(opt, 0)
    step = TrainStep(model, SSDLoss(), opt, device=CPU, grad_clip_norm=1.0, compile=True,
                     compile_backend="eager")  # fmt: skip
    ensure_momentum_buffers(opt)
    for seed in (1, 2):
        step([_batch(2, seed)])
    assert compile_counts() == (2, 0), dict(counters["graph_break"])
    count = count_step(step, [_batch(2, 3)])
    assert count.syncs == 0, count.sync_names()
    step([_batch(2, 4)])  # back to the compiled regions: no recompilation
    assert compile_counts() == (2, 0)
