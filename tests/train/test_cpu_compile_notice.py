"""Compiling on a CPU with a CUDA toolkit installed: torch's "No CUDA runtime is found" warning
does not reach the console (it promises no library warnings); the logger's other records do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROGRAM = """
import logging, sys
if sys.argv[1] == "quiet":
    from ssd_train.components import quiet_cpu_compile_notice
    quiet_cpu_compile_notice()
import torch.utils.cpp_extension  # what inductor imports when it compiles on a CPU
logging.getLogger("torch.utils.cpp_extension").warning("another warning")
"""


def _stderr(mode: str, cuda_home: str) -> str:
    env = {**os.environ, "CUDA_HOME": cuda_home, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_no_cuda_runtime_notice_is_dropped_and_nothing_else(tmp_path) -> None:
    cuda_home = str(tmp_path)  # an existing folder, as CUDA_HOME=/usr/local in the report
    loud = _stderr("loud", cuda_home)
    if "No CUDA runtime is found" not in loud:
        pytest.skip("this torch build does not print the notice (a CUDA runtime is present)")
    quiet = _stderr("quiet", cuda_home)
    assert "No CUDA runtime is found" not in quiet
    assert "another warning" in quiet and "another warning" in loud
