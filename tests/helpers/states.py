"""Comparing nested training states (dicts/lists/tuples of tensors and plain values)."""

from __future__ import annotations

from typing import Any

import torch


def assert_states_equal(got: Any, want: Any, where: str = "state", *, rtol: float = 0.0) -> None:
    """``got`` equals ``want`` everywhere: same keys, lengths, plain values, tensor dtypes and
    shapes; tensor values bit for bit (NaN equal to NaN), or to ``rtol`` for floating tensors
    when ``rtol`` > 0 (GPU kernels with atomics are not bitwise reproducible)."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert got.dtype == want.dtype and got.shape == want.shape, where
        got, want = got.cpu(), want.cpu()
        if rtol > 0 and want.is_floating_point():
            torch.testing.assert_close(got, want, rtol=rtol, atol=rtol, equal_nan=True, msg=where)
        else:
            same = torch.equal(got, want) or (
                want.is_floating_point()
                and torch.equal(got.isnan(), want.isnan())
                and torch.equal(got.nan_to_num(), want.nan_to_num())
            )
            assert same, where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (where, got.keys(), want.keys())
        for key in want:
            assert_states_equal(got[key], want[key], f"{where}[{key!r}]", rtol=rtol)
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_states_equal(g, w, f"{where}[{i}]", rtol=rtol)
    else:
        assert got == want or (got != got and want != want), (where, got, want)
