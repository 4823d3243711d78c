"""Shared helpers of the infra tests: repository paths and loading infra/ scripts as modules."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


def load_script(relative: str) -> ModuleType:
    """Import a Python script of infra/ (not a package) by path, e.g. ``"mlperf_score.py"``."""
    path = INFRA / relative
    name = "infra_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sourced_env(script: Path, names: list[str]) -> dict[str, str]:
    """The values of ``names`` after ``source script`` in a clean bash (unset names are absent)."""
    printer = "; ".join(f'[ -n "${{{n}+x}}" ] && printf "%s=%s\\0" {n} "${{{n}}}"' for n in names)
    out = subprocess.run(
        [
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            "bash",
            "-c",
            f'source "$1" >/dev/null; {printer}; true',
            "_",
            str(script),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item)
