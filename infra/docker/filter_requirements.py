"""Filter a requirements list (``uv export`` of uv.lock) down to what a container image lacks.

The NGC PyTorch image brings its own torch, torchvision, triton and CUDA libraries (NVIDIA builds,
versions like ``2.9.0a0+...nv25.10``) and many common packages (numpy, pillow, ...). Installing the
lock's pins over them would replace NVIDIA's torch with a PyPI build or break packages compiled
against the image's numpy, so the Dockerfile installs only the requirements that this function
keeps, with ``pip install --no-deps``:

- never the torch family (``torch``, ``torchvision``, ``torchaudio``, ``triton``, ``nvidia-*``,
  ``cuda-*``): the image's builds are the ones to use;
- not a package that is already installed (any version): the image's version stays;
- not a requirement whose environment marker does not apply here (``; sys_platform == 'win32'``).

Usage (in the Dockerfile):
    uv export --frozen --no-dev --no-emit-workspace ... | python filter_requirements.py > extra.txt
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement


def normalise(name: str) -> str:
    """PEP 503 normalised project name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_torch_family(name: str) -> bool:
    """Whether ``name`` (normalised) is torch or one of the CUDA/compiler packages it ships with."""
    return name in {"torch", "torchvision", "torchaudio", "triton"} or name.startswith(
        ("nvidia-", "cuda-")
    )


def installed_names() -> set[str]:
    """Normalised names of every distribution installed in this interpreter's environment."""
    names = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            names.add(normalise(name))
    return names


def filter_requirements(lines: Iterable[str], installed: set[str]) -> list[str]:
    """The requirement lines to install: not torch-family, not already in ``installed``, marker true.

    ``lines`` are requirements-file lines (``name==version ; markers``); comments, blank lines and
    option lines (``-e ...``, ``--index-url ...``) are dropped.

    Raises:
        ValueError: a line that is not a requirement (the message quotes it).
    """
    keep = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise ValueError(f"not a requirement line: {raw!r} ({error})") from None
        name = normalise(requirement.name)
        if is_torch_family(name) or name in installed:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        keep.append(line)
    return keep


def main() -> int:
    for line in filter_requirements(sys.stdin, installed_names()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
