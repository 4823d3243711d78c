"""Files that ``torch.load(weights_only=True)`` cannot read, one per exception type it raises.

The byte patterns were found once, offline, by loading 16-byte strings from a seeded generator
(``random.Random(seed * 7919 + 16).randbytes(16)``) and keeping the first one per exception type;
they are fixed here so that the tests never depend on chance. ``test_bad_input_battery`` asserts
which type torch raises for each, so a change in torch shows up as a failing test, not as a silent
loss of coverage.
"""

from __future__ import annotations

import pickle

import torch

BAD_TORCH_BYTES: dict[type[BaseException], bytes] = {
    pickle.UnpicklingError: bytes.fromhex("abc18c5c6ff81e78f4c7007bd565f148"),
    IndexError: bytes.fromhex("875c1959d659e9b92b5109e30472263d"),
    KeyError: bytes.fromhex("6a8c1160661ce161cf724d254e476c70"),
    UnicodeDecodeError: bytes.fromhex("63064a6f778ba18e28eb26e24a064d8e"),
    EOFError: bytes.fromhex("5d8a6716d382b0a2e49d904e43871d7f"),
    RuntimeError: bytes.fromhex("47ba3bf1cc76a9ed3d2e63ab0c121654"),
}


class NotATensor:
    """A Python object that ``weights_only=True`` refuses to unpickle ("Unsupported global")."""


def object_file_bytes() -> bytes:
    """A real torch file holding a Python object: torch refuses it for safety."""
    import io

    buffer = io.BytesIO()
    torch.save({"model": NotATensor()}, buffer)
    return buffer.getvalue()
