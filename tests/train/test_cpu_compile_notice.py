"""Compiling on a CPU with a CUDA toolkit installed: torch's "No CUDA runtime is found" warning
does not reach the console (it promises no library warnings); the logger's other records do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# One fresh interpreter, two imports of torch.utils.cpp_extension (the warning is printed when
# the module is executed): as torch prints it, then with the filter the trainer installs.
_PROGRAM = """
import importlib, logging, sys
import torch.utils.cpp_extension as ext  # what inductor imports when it compiles on a CPU
logging.getLogger("torch.utils.cpp_extension").warning("another warning")
print("----", file=sys.stderr, flush=True)
from ssd_train.report.console import quiet_cpu_compile_notice
quiet_cpu_compile_notice()
importlib.reload(ext)
logging.getLogger("torch.utils.cpp_extension").warning("another warning")
"""


def test_no_cuda_runtime_notice_is_dropped_and_nothing_else(tmp_path) -> None:
    env = {**os.environ, "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    # CUDA_HOME: an existing folder, as CUDA_HOME=/usr/local in the report
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loud, quiet = done.stderr.split("----\n")
    if "No CUDA runtime is found" not in loud:
        pytest.skip("this torch build does not print the notice (a CUDA runtime is present)")
    assert "No CUDA runtime is found" not in quiet
    assert "another warning" in quiet and "another warning" in loud
