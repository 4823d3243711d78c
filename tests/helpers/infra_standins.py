"""Stand-in ``srun``, ``scontrol``, ``docker`` and ``sysctl`` executables that record their calls.

Each stand-in appends one JSON line ``{"tool", "argv", "env"}`` to ``$STANDIN_LOG`` (``env`` holds
the variables the launch scripts pass on: ``SSD_*``, ``DGX*``, ``MASTER_*``, ...; for ``docker``,
``--env=NAME`` options without a value are resolved from the stand-in's environment as Docker
would). The trial step of ``srun`` (the one running ``run_and_time.sh``) acts as
``$STANDIN_TRIAL`` says (one mode, or one per trial separated by commas): ``ok`` (exit 0 after writing a RESULT line to its ``--output`` file),
``requeue`` (write the run folder's ``requeue`` marker, as the trainer does after a stop request),
``wait_stop`` (wait up to 60 s for the run folder's STOP file, then write ``requeue``) or ``fail``
(exit 3). Container paths (/results) are mapped back to the host through ``--container-mounts``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

PASSED_ON = (
    "SSD_",
    "DGX",
    "MASTER_",
    "RDZV_ID",
    "NNODES",
    "NPROC_PER_NODE",
    "TORCH_HOME",
    "MLPERF_",
    "SUBMISSION_",
    "PATH",
)

_RECORDER = r"""
import json, os, sys, time
from pathlib import Path

PASSED_ON = {passed_on!r}
tool = {tool!r}
argv = sys.argv[1:]
env = {{k: v for k, v in os.environ.items() if k.startswith(PASSED_ON)}}
if tool == "docker":
    for arg in argv:
        if arg.startswith("--env=") and "=" not in arg[len("--env="):]:
            name = arg[len("--env="):]
            if name in os.environ:
                env["docker:" + name] = os.environ[name]
with open(os.environ["STANDIN_LOG"], "a") as f:
    f.write(json.dumps({{"tool": tool, "argv": argv, "env": env}}) + "\n")

def host_path(path):
    for arg in argv:
        if arg.startswith("--container-mounts="):
            for mount in arg.split("=", 1)[1].split(","):
                src, dst = mount.split(":")[:2]
                if path == dst or path.startswith(dst + "/"):
                    return src + path[len(dst):]
    return path

if tool == "scontrol":
    if argv[:2] == ["show", "hostnames"]:
        print("nodeA\nnodeB")
    elif argv[:2] == ["show", "node"]:
        print(f"NodeName={{argv[2]}} Arch=x86_64 CoresPerSocket=64\n   NodeAddr=10.1.2.3 NodeHostName={{argv[2]}} Version=22.05.8")
    sys.exit(0)
if tool == "docker" and argv and argv[-1].endswith("infra/run_and_time.sh"):
    print("RESULT,SINGLE_STAGE_DETECTOR,,42,test-org,2026-01-01 10:00:00 AM")
    sys.exit(0)
if tool == "srun" and argv and argv[-1].endswith("infra/run_and_time.sh"):
    run_dir = Path(host_path(os.environ["SSD_RUN_DIR"]))
    modes = os.environ.get("STANDIN_TRIAL", "ok").split(",")
    mode = modes[min(int(run_dir.name.rsplit("-", 1)[1]), len(modes)) - 1]
    out = next((a.split("=", 1)[1] for a in argv if a.startswith("--output=")), None)
    if out:
        with open(out, "a") as f:
            f.write("RESULT,SINGLE_STAGE_DETECTOR,,42,test-org,2026-01-01 10:00:00 AM\n")
    if mode == "fail":
        sys.exit(3)
    if mode == "wait_stop":
        deadline = time.monotonic() + 60
        while not (run_dir / "STOP").exists():
            if time.monotonic() > deadline:
                sys.exit(4)
            time.sleep(0.05)
        mode = "requeue"
    if mode == "requeue":
        (run_dir / "checkpoints" / "step-2").mkdir(parents=True, exist_ok=True)
        (run_dir / "requeue").write_text("")
    sys.exit(0)
sys.exit(0)
"""


def install_standins(
    bin_dir: Path, tools: tuple[str, ...] = ("srun", "scontrol", "docker", "sysctl")
) -> None:
    """Write the stand-in executables into ``bin_dir`` (to be put first on PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        path = bin_dir / tool
        path.write_text(f"#!{sys.executable}\n" + _RECORDER.format(tool=tool, passed_on=PASSED_ON))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def read_calls(log: Path, tool: str | None = None) -> list[dict]:
    """The recorded calls, optionally of one tool only, in call order."""
    if not log.exists():
        return []
    calls = [json.loads(line) for line in log.read_text().splitlines() if line]
    return [c for c in calls if tool is None or c["tool"] == tool]


def base_env(bin_dir: Path, log: Path) -> dict[str, str]:
    """A clean environment for running a launch script against the stand-ins."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    return {**keep, "PATH": f"{bin_dir}:/usr/bin:/bin", "STANDIN_LOG": str(log)}
