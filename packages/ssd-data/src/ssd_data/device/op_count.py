"""Counting what a piece of device code dispatches: every aten operation (on a GPU each is a
kernel launch plus Python overhead) and the ones that make the host wait for the device.

Counted on CPU tensors with a :class:`~torch.utils._python_dispatch.TorchDispatchMode`, so the
launch and sync budgets of the GPU path are checked on any machine. Sync operations:

- ``_local_scalar_dense``: ``.item()``, ``int(t)``, ``float(t)``, ``bool(t)`` of a tensor;
- ``is_nonzero``, ``equal``: Python truth of a tensor, ``torch.equal``;
- ``nonzero``, ``masked_select``, ``unique`` (and its variants): outputs whose size depends on
  the values, so the host must wait to allocate them;
- ``lift_fresh``: a tensor built from Python data (``torch.tensor([...])``), which on CUDA is
  a blocking host-to-device copy;
- ``index`` / ``index_put`` with a boolean mask (``x[mask]``, ``x[mask] = v``): a ``nonzero``
  inside the kernel.

A copy to the host (``.cpu()``) of a CUDA tensor also syncs; on CPU tensors it is not an
operation at all, so it cannot be counted here: keep such copies out of steady-state code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: aten operation names (overload packets) that make the host wait for the device.
SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "is_nonzero",
        "equal",
        "nonzero",
        "masked_select",
        "unique",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "lift_fresh",
    }
)


_MASK_INDEXING = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})


def _has_bool_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ()
    )


@dataclass
class OpCount:
    """What one counted region dispatched: ``ops`` aten operations in all, ``syncs`` of them
    host syncs (names in :data:`SYNC_OPS`), and ``by_name`` the count per operation name."""

    ops: int = 0
    syncs: int = 0
    by_name: Counter[str] = field(default_factory=Counter)
    syncs_by_name: Counter[str] = field(default_factory=Counter)

    def sync_names(self) -> dict[str, int]:
        """The sync operations seen, with their counts (to say which one to remove)."""
        return dict(self.syncs_by_name)


class _CountingMode(TorchDispatchMode):
    def __init__(self, count: OpCount) -> None:
        super().__init__()
        self.count = count

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict | None = None
    ) -> Any:
        name = func.overloadpacket.__name__
        self.count.ops += 1
        self.count.by_name[name] += 1
        if name in SYNC_OPS or (name in _MASK_INDEXING and _has_bool_index(args)):
            self.count.syncs += 1
            self.count.syncs_by_name[name] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_ops() -> Iterator[OpCount]:
    """``with count_ops() as c: ...`` counts the aten operations dispatched in the block (on
    this thread) into ``c``."""
    count = OpCount()
    with _CountingMode(count):
        yield count


def ops_of(fn: Callable[[], object]) -> OpCount:
    """The operations one call of ``fn`` dispatches."""
    with count_ops() as count:
        fn()
    return count
