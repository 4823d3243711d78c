"""Reading a tensor file with ``torch.load(weights_only=True)``, every failure one plain message.

torch raises many exception types for a file that is not one of its own (``UnpicklingError``,
``EOFError``, ``IndexError``, ``KeyError``, ``UnicodeDecodeError``, ``RuntimeError``, ...),
depending on the file's first bytes, and its ``weights_only`` text suggests loading untrusted code.
:func:`load_tensor_file` turns all of them into one :class:`TorchFileError` whose message says what
the file is not and what to pass instead, naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class TorchFileError(ValueError):
    """A file that ``torch.load(weights_only=True)`` cannot read; one line, naming the file."""


def torch_load_problem(message: str) -> str:
    """Why torch could not read a file, from its error ``message``, in the user's terms."""
    if "Unsupported global" in message:
        return "it holds Python objects other than tensors and numbers, which are not loaded for safety"
    return "torch cannot read it (a damaged file, or another format)"


def load_tensor_file(
    path: str | Path, *, what: str, instead: str, map_location: str | torch.device = "cpu"
) -> Any:
    """``torch.load(path, weights_only=True)``; any failure -> :class:`TorchFileError`.

    Args:
        path: the file.
        what: what the file should be, with its article ("a torch state dict of ...").
        instead: what to pass instead ("the path of ..."), completing "pass ...".

    Raises:
        TorchFileError: "``path`` is not ``what``: <why>; pass ``instead``", whatever torch raised.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for foreign or damaged files
        why = torch_load_problem(str(error))
        raise TorchFileError(f"{path} is not {what}: {why}; pass {instead}") from error
