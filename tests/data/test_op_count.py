"""The op/sync counter that the device budgets rest on: each sync kind is seen, plain device
work is not mistaken for a sync, and a count is per operation dispatched."""

from __future__ import annotations

import torch
from ssd_data.device.op_count import count_ops, ops_of


def test_each_kind_of_host_sync_is_counted() -> None:
    x = torch.arange(-3.0, 5.0)
    cases = {
        "_local_scalar_dense": lambda: x.sum().item(),
        "is_nonzero": lambda: bool(x[0] > 0),
        "equal": lambda: torch.equal(x, x),
        "nonzero": lambda: (x > 0).nonzero(),
        "masked_select": lambda: torch.masked_select(x, x > 0),
        "lift_fresh": lambda: torch.tensor([1.0, 2.0]),
        "index": lambda: x[x > 0],
        "index_put_": lambda: x.clone().index_put_((x > 0,), torch.zeros(())),
    }
    for name, fn in cases.items():
        count = ops_of(fn)
        assert count.syncs >= 1, name
        assert name in count.sync_names() or (
            name == "is_nonzero" and "_local_scalar_dense" in count.sync_names()
        ), (name, count.by_name)
    unique = ops_of(lambda: torch.unique(x))
    assert unique.syncs == 1, unique.by_name


def test_device_work_without_syncs_counts_ops_only() -> None:
    x = torch.rand(4, 3, 8, 8)
    w = torch.rand(4, 8, 8)
    with count_ops() as count:
        y = torch.matmul(w.unsqueeze(1), x).clamp_(0, 1)
        y = torch.where(y > 0.5, y, torch.zeros((), dtype=y.dtype))
        y[:, 0] = y[:, 1]  # slicing and copying by position: no sync
        y.index_select(0, torch.arange(4))
    assert count.syncs == 0, count.sync_names()
    assert count.ops >= 7
    assert count.ops == sum(count.by_name.values())
