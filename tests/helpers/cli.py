"""Launching the training command line in a subprocess (with the hang guard of ``jobs.run_job``).

``python -m ssd_train ARGS`` runs the product as users run it. ``python -m
tests.helpers.cli_standin ARGS`` runs the same ``ssd_train.__main__.main`` with the tiny stand-in
network (``standin.py``), so that a whole run through the CLI, its messages and its exit code
take seconds; with ``INJECT_BUG=1`` in the environment, the training loop raises an unexpected
error (a bug) there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import prelaunch
from tests.helpers.jobs import run_job

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a launched run: no ``SSD_*`` settings from outside, no CUDA (unless a
    gpu test set it), wandb off, the repository importable (for ``tests.helpers``), ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSD_")}
    env.update(WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | extra


def ssd_train_command(*args: str, standin: bool = False, script: bool = False) -> list[str]:
    """``python -m ssd_train ARGS``; ``script``: the installed ``ssd-train`` console script;
    ``standin``: the same entry point with the tiny stand-in network."""
    if script:
        exe = shutil.which("ssd-train", path=str(Path(sys.executable).parent))
        assert exe is not None, "the ssd-train script is not installed next to this Python"
        return [exe, *args]
    module = "tests.helpers.cli_standin" if standin else "ssd_train"
    return [sys.executable, "-m", module, *args]


def run_ssd_train(
    *args: str,
    standin: bool = False,
    script: bool = False,
    prelaunched: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess:
    """Run :func:`ssd_train_command` to its end (killing it and failing after ``timeout`` s).

    ``prelaunched``: the same command forked from a process that has imported torch already
    (``prelaunch.py``: ~8 s less per launch; not for settings read at import time)."""
    if prelaunched:
        assert not script, "a console script is launched for real"
        module = "tests.helpers.cli_standin" if standin else "ssd_train"
        return prelaunch.run(module, list(args), env=env or cli_env(), cwd=cwd, timeout=timeout)
    cmd = ssd_train_command(*args, standin=standin, script=script)
    return run_job(cmd, env=env or cli_env(), timeout=timeout, cwd=cwd)
