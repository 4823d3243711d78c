"""The one training step, shared by training and ``--mode benchmark``.

Inside the step, on the device (interfaces.md "Inside the train step"), for each micro-batch:
uint8 images -> ``ssd_core.preprocess.forward_normalized`` (ImageNet normalisation, channels_last,
autocast, SSD300) -> ``ssd_core.box_coder.encode`` of the padded ground truth -> ``SSDLoss`` ->
backward (loss scaled by the micro-batch's share of the step's images, gradients synchronised only
after the last one); then the update: optional gradient-norm clipping, the SGD step and the
non-finite flag. There is no host synchronisation: losses, gradient norm and the flag come back as
device tensors (:class:`StepOutput`) that the caller reads only on logging steps.

Compilation (``compile=True``, ``compile_mode`` = torch.compile's mode) covers two regions:

1. **forward + loss, with its backward**: one Dynamo graph per micro-batch; AOTAutograd derives
   the backward graph from it and Inductor compiles both, so ``.backward()`` runs compiled code.
   A ``.backward()`` call itself cannot sit inside a Dynamo graph (it is where the compiled
   backward is launched), so forward and update are separate regions; with k micro-batches the
   forward+backward region runs k times, then the update once.
2. **the update**: gradient clipping (``clip_grad_norm_``, foreach), ``optimizer.step()`` (SGD,
   ``fused``) and the finite flag, one graph. The LR is a 0-d device tensor in the param groups
   (``ssd_train.optim``), so a new LR value never recompiles, and the eager step never syncs.

``optimizer.zero_grad(set_to_none=True)`` and the share-weighted accumulation of three 0-d losses
stay eager (no kernels, resp. two tiny ones per micro-batch). When optimiser step hooks are
registered (the ``skip`` non-finite policy's pre-hook, which decides on the host), the update runs
eagerly through ``optimizer.step()`` so the hooks run.

Under DDP the wrapper's own ``forward`` (logger statistics, reducer bookkeeping) must run eagerly:
Dynamo cannot trace ``Logger.set_runtime_stats_and_log`` or the skipped ``_inside_ddp_forward``,
which cost 3 graph breaks on every synchronised step when the whole forward+loss function is
compiled around the DDP module (measured with torch 2.15, 2-rank gloo). So for a wrapped model the
wrapped module's ``forward`` is compiled instead (set on the module only for the step's duration,
so evaluation of the same module stays eager) and encode + loss form a second compiled region;
normalisation then runs eagerly (one elementwise kernel chain). This keeps DDP's bucketed
all-reduce overlapped with the compiled backward (Dynamo's DDPOptimizer splits the model graph at
bucket boundaries) and gives 0 graph breaks. FSDP2 runs its all-gather / reshard hooks around
every unit under ``torch._dynamo.disable``, so compiling the root's forward would break the graph
at each unit (3 breaks per step, measured); instead each FSDP2 unit's ``forward`` is compiled on
its own (trunk, extra blocks, loc heads, conf heads: ``ssd_train.distributed``), the hooks and
the root's few glue ops run eagerly between those graphs, and the update stays eager (its
gradients are DTensors). 0 graph breaks (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from ssd_core import encode, forward_normalized
from torch import Tensor, nn

from ssd_train.optim import has_step_hooks, select_sgd_kernels

CompileMode = Literal["default", "max-autotune-no-cudagraphs", "reduce-overhead"]


class MicroBatch(Protocol):
    """What the step reads from a ``ssd_data`` ``TrainBatch``."""

    images: Tensor  # uint8 [N, 3, 300, 300] RGB, not normalised
    boxes: Tensor  # float32 [N, M, 4] ltrb normalised to [0, 1]
    labels: Tensor  # int64 [N, M], 0 = padding


@dataclass(frozen=True)
class StepOutput:
    """Detached 0-d device tensors of one optimiser step (read them only on logging steps)."""

    loss: Tensor  # float32, image-weighted mean of the micro-batch total losses
    loc: Tensor  # float32, localisation part
    conf: Tensor  # float32, confidence part
    grad_norm: Tensor  # float32, global gradient norm before clipping (0 when clipping is off)
    finite: Tensor  # bool, loss and gradient norm finite


def encoded_loss(
    criterion: nn.Module,
    loc: Tensor,
    logits: Tensor,
    boxes: Tensor,
    labels: Tensor,
    encode_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Encode the ground truth and apply ``SSDLoss``.

    Args:
        loc: float32 [N, 8732, 4]; logits: float32 [N, 8732, C]; boxes: float32 [N, M, 4] ltrb in
            [0, 1]; labels: int64 [N, M] (0 = padding).
        encode_dtype: the IoU dtype of the matching (``model.encode_dtype``; same matches).

    Returns:
        ``total`` float32 0-d (with grad) and float32 [3] detached ``(total, loc, conf)``.
    """
    loc_targets, label_targets = encode(boxes, labels, compute_dtype=encode_dtype)
    out = criterion(loc, logits, loc_targets, label_targets)
    return out.total, torch.stack([out.total, out.loc, out.conf]).detach()


def compute_loss(
    model: nn.Module,
    criterion: nn.Module,
    images: Tensor,
    boxes: Tensor,
    labels: Tensor,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
    loss_fn: Callable[..., tuple[Tensor, Tensor]] = encoded_loss,
    encode_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Loss of one micro-batch: ``total`` float32 0-d and float32 [3] detached (total, loc, conf).

    Args:
        images: uint8 [N, 3, 300, 300]; boxes: float32 [N, M, 4] ltrb in [0, 1]; labels: int64 [N, M].
        loss_fn: :func:`encoded_loss` or a compiled version of it.
    """
    loc, logits = forward_normalized(model, images, autocast_dtype, channels_last)
    return loss_fn(criterion, loc, logits, boxes, labels, encode_dtype)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Let DDP / FSDP2 all-reduce gradients only when ``enabled`` (the last micro-batch of a step)."""
    if enabled:
        yield
    elif hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def _is_wrapped(model: nn.Module) -> bool:
    """DDP (``no_sync``) or FSDP2 (``set_requires_gradient_sync``)."""
    return hasattr(model, "no_sync") or hasattr(model, "set_requires_gradient_sync")


def _compiled_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose ``forward`` a wrapped model's step compiles: the module inside DDP, or
    each FSDP2 unit below the root (its hooks, which Dynamo skips, then run between the graphs)."""
    if hasattr(model, "no_sync"):
        return [model.module]  # type: ignore[list-item]
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if m is not model and isinstance(m, FSDPModule)]


class TrainStep:
    """Callable ``step(micro_batches) -> StepOutput``: one optimiser step over 1..k micro-batches.

    Args:
        model: the (possibly DDP/FSDP-wrapped) SSD300, in train mode.
        criterion: ``ssd_core.loss.SSDLoss``.
        optimizer: the SGD optimiser (its LR is set by the caller's schedule before each step;
            a 0-d tensor LR is filled in place).
        device: where the step runs; batches on other devices are copied with ``non_blocking``.
        autocast_dtype: ``torch.bfloat16`` for bf16 autocast, ``None`` for fp32.
        channels_last: run the model on channels_last tensors.
        grad_clip_norm: clip the global gradient norm to this (None = no clipping).
        compile: ``torch.compile`` the step (see the module docstring for the regions).
        encode_dtype: IoU dtype of the ground-truth matching (``model.encode_dtype``).
        compile_backend: torch.compile's backend (``inductor``; ``aot_eager`` compiles the same
            graphs without generating kernels: for finding graph breaks quickly).
        compile_mode: torch.compile's ``mode``: ``default``, ``max-autotune-no-cudagraphs`` or
            ``reduce-overhead`` (CUDA graphs).
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = True,
        grad_clip_norm: float | None = None,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        encode_dtype: torch.dtype = torch.float32,
        compile_backend: str = "inductor",
    ) -> None:
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.grad_clip_norm = grad_clip_norm
        self.compiled = compile
        self.compile_mode = compile_mode
        self.encode_dtype = encode_dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        # the undecorated step: ``Optimizer.step``'s grad-mode wrapper calls
        # ``torch._dynamo.graph_break()`` twice (pytorch#104053); ``_update`` runs it under
        # no_grad itself, so the update stays one graph
        self._sgd_step: Callable[[torch.optim.Optimizer], Any] = inspect.unwrap(
            type(optimizer).step
        )
        self.wrapped = _is_wrapped(model)
        # (module, compiled forward) pairs routed in for the step's duration
        self._compiled_forwards: list[tuple[nn.Module, Callable[..., Any]]] = []
        self.forward_loss: Callable[..., tuple[Tensor, Tensor]] = compute_loss
        self._loss_tail: Callable[..., tuple[Tensor, Tensor]] = encoded_loss
        self.update: Callable[[Tensor], tuple[Tensor, Tensor]] = self._update
        self._update_compiled = self._eager_only = False
        self._fsdp2 = hasattr(model, "set_requires_gradient_sync")
        if compile:
            mode = None if compile_mode == "default" else compile_mode
            options: dict[str, Any] = {"backend": compile_backend}
            if compile_backend == "inductor":
                options["mode"] = mode  # modes are Inductor's
            if self.wrapped:
                self._compiled_forwards = [
                    (m, torch.compile(m.forward, **options)) for m in _compiled_modules(model)
                ]
                self._loss_tail = torch.compile(encoded_loss, **options)
            else:
                self.forward_loss = torch.compile(compute_loss, **options)
            if not self._fsdp2:  # FSDP2's gradients are DTensors: eager update
                self.update = torch.compile(self._update, **options)
                self._update_compiled = True

    def __call__(self, micro_batches: Sequence[MicroBatch]) -> StepOutput:
        if not micro_batches:
            raise ValueError("a train step needs at least one micro-batch")
        if self.compiled and self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        total_images = sum(int(mb.images.shape[0]) for mb in micro_batches)
        sums = torch.zeros(3, device=self.device)
        last = len(micro_batches) - 1
        with self._compiled_forwards_swapped_in():
            for i, mb in enumerate(micro_batches):
                images = mb.images.to(self.device, non_blocking=True)
                boxes = mb.boxes.to(self.device, non_blocking=True)
                labels = mb.labels.to(self.device, non_blocking=True)
                share = images.shape[0] / total_images
                with gradient_sync(self.model, enabled=i == last):
                    total, parts = self.forward_loss(
                        self.model,
                        self.criterion,
                        images,
                        boxes,
                        labels,
                        self.autocast_dtype,
                        self.channels_last,
                        self._loss_tail,
                        self.encode_dtype,
                    )
                    (total * share).backward()
                sums += parts * share
        hooks = has_step_hooks(self.optimizer)
        compiled_update = self._update_compiled and not (hooks or self._eager_only)
        update = self._update_with_hooks if hooks else self._update
        update = self.update if compiled_update else update
        select_sgd_kernels(self.optimizer, fused=not (compiled_update or self._fsdp2))
        grad_norm, finite = update(sums)
        if self.compiled and self.compile_mode == "reduce-overhead":
            # CUDA-graph outputs are overwritten by the next replay; callers keep these longer
            grad_norm, finite = grad_norm.clone(), finite.clone()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutput(sums[0], sums[1], sums[2], grad_norm, finite)

    def _update(self, sums: Tensor) -> tuple[Tensor, Tensor]:
        """Clip, SGD step, finite flag; ``sums`` float32 [3] -> (grad_norm float32 0-d, finite bool 0-d)."""
        grad_norm = self._clip()
        with torch.no_grad():
            self._sgd_step(self.optimizer)
        return grad_norm, torch.isfinite(sums).all() & torch.isfinite(grad_norm)

    def _update_with_hooks(self, sums: Tensor) -> tuple[Tensor, Tensor]:
        """Eager :meth:`_update` through ``optimizer.step()``, which runs the registered step hooks
        (``resilience.nonfinite`` 's ``skip`` policy decides on the host before each update)."""
        grad_norm = self._clip()
        self.optimizer.step()
        return grad_norm, torch.isfinite(sums).all() & torch.isfinite(grad_norm)

    def _clip(self) -> Tensor:
        if self.grad_clip_norm is None:
            return torch.zeros((), device=self.device)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm, foreach=True)
        return norm.detach().float()

    @contextlib.contextmanager
    def _compiled_forwards_swapped_in(self) -> Iterator[None]:
        """Route the wrapped modules' ``forward`` through their compiled versions during the step."""
        for module, compiled in self._compiled_forwards:
            module.forward = compiled  # type: ignore[method-assign]
        try:
            yield
        finally:
            for module, _ in self._compiled_forwards:
                del module.forward

    @contextlib.contextmanager
    def run_eagerly(self) -> Iterator[None]:
        """Steps inside run every region eagerly (``torch.compiler.set_stance("force_eager")``)
        with the eager update's SGD kernel: what the step's code does without compilation."""
        self._eager_only = True
        try:
            with torch.compiler.set_stance("force_eager"):
                yield
        finally:
            self._eager_only = False

    def warm_up(self, batch: MicroBatch, micro_batches: int = 1, steps: int = 2) -> None:
        """Compile (and for CUDA graphs record) every region, then restore all state.

        First gives every SGD parameter with momentum a zero momentum buffer (the same update
        as SGD's buffer-less first step: ``0 * momentum + grad == grad`` exactly), so the first
        and later steps share one compiled update graph (Dynamo guards on the buffers' presence
        and identity). Then runs ``steps`` whole steps of ``micro_batches`` copies of ``batch``
        and puts back, in place, the model's parameters and buffers (BatchNorm running
        statistics, ``num_batches_tracked``), the optimiser's state tensors and param-group
        values (same tensor objects, so no recompilation follows), the gradients and the RNG
        states. Training after ``warm_up`` gives bitwise the same parameters as without it.
        Under DDP/FSDP2 every rank must call it (the steps all-reduce).

        Args:
            batch: a micro-batch like the training ones (e.g. ``ssd_train.components.synthetic_batch``
                of ``data.batch_size`` images and ``data.max_boxes`` boxes, on any device).
            micro_batches: micro-batches per step (``optim.grad_accumulation_steps``).
            steps: warm-up steps (2: CUDA graph trees record on the second run).
        """
        ensure_momentum_buffers(self.optimizer)
        with _restored(self.model, self.optimizer, self.device):
            for _ in range(steps):
                self([batch] * micro_batches)


def ensure_momentum_buffers(optimizer: torch.optim.Optimizer) -> None:
    """Give each parameter of an SGD group with momentum a zero ``momentum_buffer`` if it has none.

    SGD's first step sets ``buffer = grad``; with a zero buffer it computes ``0 * momentum +
    (1 - dampening) * grad``, the same values when ``dampening`` is 0 (SGD's default, and ours).
    """
    with torch.no_grad():
        for group in optimizer.param_groups:
            if not group.get("momentum") or group.get("dampening", 0) != 0:
                continue
            for p in group["params"]:
                state = optimizer.state[p]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    ).detach()


@contextlib.contextmanager
def _restored(
    model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> Iterator[None]:
    """Snapshot model tensors, grads, optimiser state and RNG; put them back in place on exit."""
    with torch.no_grad():
        tensors = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
        grads = {p: None if p.grad is None else p.grad.clone() for p in model.parameters()}
        state = {p: {k: _clone(v) for k, v in s.items()} for p, s in optimizer.state.items()}
        groups = [
            {k: _clone(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.detach().copy_(tensors[k])
            for p, g in grads.items():
                p.grad = g
            for p, current in optimizer.state.items():  # keep the dicts: Dynamo guards on them
                saved = state.get(p, {})
                for k in [k for k in current if k not in saved]:
                    del current[k]
                for k, v in saved.items():
                    if isinstance(v, Tensor) and isinstance(current.get(k), Tensor):
                        current[k].copy_(v)
                    else:
                        current[k] = v
            for g, saved_group in zip(optimizer.param_groups, groups, strict=True):
                for k, v in saved_group.items():
                    if isinstance(v, Tensor) and isinstance(g.get(k), Tensor):
                        g[k].copy_(v)
                    else:
                        g[k] = v
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)


def _clone(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, Tensor) else value
