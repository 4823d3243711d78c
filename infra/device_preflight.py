"""The device check's preflight (``infra/device_check.sh --preflight``, and the first step of every
check): in under 30 seconds, everything the rows need, so that a check never dies after setup.

1. every module the check imports, imported;
2. every requirement the check's code needs resolves, with a version that satisfies it:
   - live, in this interpreter (on the GPU machine: its preinstalled packages + the carried wheels);
   - against the lists (on any machine): each distribution reached from the project's requirements
     is carried (``infra/device_wheels.txt``, at its ``uv.lock`` version) or preinstalled on the
     GPU image (``infra/device_image.txt``); a carried package's requirement on an image package
     must be met by the version recorded there (a version the list does not record must be
     carried: pydantic-core needs a newer typing-extensions than an image may have);
3. a C compiler (Inductor compiles its CPU kernels and Triton's launchers with it);
4. one tiny ``torch.compile`` on the device (CUDA when there is one; else the CPU, and says so).

Prints one line: ``preflight ok ...`` (exit 0) or ``preflight FAILED: <what and what to do>``
(exit 4: the environment, not the project, is missing something).
"""

from __future__ import annotations

import email.parser
import importlib
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS_LIST = ROOT / "infra" / "device_wheels.txt"
IMAGE_LIST = ROOT / "infra" / "device_image.txt"

#: the modules the check's rows import (train step benchmark, input pipeline bench, evaluation)
CHECK_MODULES = (
    "torch", "torchvision", "numpy", "PIL", "tqdm", "rich", "pydantic", "pydantic_settings",
    "torchdata.nodes", "faster_coco_eval", "mlperf_logging.mllog", "torch.profiler",
    "ssd_core", "ssd_core.postprocess", "ssd_data", "ssd_data.cli", "ssd_data.bench.cli",
    "ssd_data.device.op_count", "ssd_eval", "ssd_eval.synthetic", "ssd_train.__main__",
    "ssd_train.benchmark", "ssd_train.components", "ssd_train.validation",
)  # fmt: skip

#: declared requirements the check never imports (experiment tracking, ONNX export, plots)
NOT_USED_BY_THE_CHECK = frozenset({"wandb", "onnx", "onnxscript", "matplotlib"})


class PreflightError(RuntimeError):
    """Something the check needs is missing; the message says what and what to do."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(path: Path) -> dict[str, str]:
    """``name[spec]  # comment`` lines -> {normalised name: spec ("" when none)}."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9_.-]+", line)
            assert name, line
            out[_norm(name.group(0))] = line[name.end() :].strip()
    return out


def locked_versions() -> dict[str, str]:
    """{normalised name: version} of every package in ``uv.lock``."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {_norm(p["name"]): p.get("version", "") for p in lock.get("package", [])}


def root_requirements() -> list[tuple[str, str]]:
    """(requirement, who) of the project's packages, without workspace members and the
    distributions the check never imports."""
    out = []
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for req in project.get("dependencies", []):
            name = _norm(re.match(r"[A-Za-z0-9_.-]+", req).group(0))  # type: ignore[union-attr]
            if not name.startswith("ssd-") and name not in NOT_USED_BY_THE_CHECK:
                out.append((req, project["name"]))
    return out


def carried_requires(name: str, wheels: Path | None) -> tuple[str, list[str]]:
    """(version, Requires-Dist) of a carried distribution: from its wheel in ``wheels`` when there
    is one (what the GPU machine installs), else from this interpreter's installed copy."""
    for wheel in sorted(wheels.glob("*.whl")) if wheels else []:
        if _norm(wheel.name.split("-")[0]) != name:
            continue
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            msg = email.parser.Parser().parsestr(z.read(meta).decode())
        return msg["Version"], msg.get_all("Requires-Dist") or []
    dist = metadata.distribution(name)
    return dist.version, dist.requires or []


def check_requirements(wheels: Path | None = ROOT / ".whl") -> tuple[int, list[str]]:
    """Walk the requirements from the project's packages through the carried ones.

    Returns:
        (distributions checked, unverified notes): project requirements on image packages whose
        version the list does not record (checked live only).

    Raises:
        PreflightError: the first requirement that does not resolve.
    """
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    carried, image, locked = read_list(WHEELS_LIST), read_list(IMAGE_LIST), locked_versions()
    env = {**default_environment(), "extra": ""}
    todo, seen, unverified = list(root_requirements()), set(), []
    while todo:
        text, who = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = _norm(req.name)
        try:  # live: this interpreter's environment
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise PreflightError(
                f"{name} (needed by {who}) is not installed: add it to infra/device_wheels.txt and"
                " run infra/device_wheels.sh" if name not in carried else
                f"{name} (needed by {who}) is not installed: run infra/device_wheels.sh and copy .whl/ with the checkout"
            ) from None  # fmt: skip
        if not req.specifier.contains(have, prereleases=True):
            raise PreflightError(
                f"{name} {have} is installed but {who} needs {req}: add it to infra/device_wheels.txt"
            )
        if name in carried:  # the lists: carried at the uv.lock version
            if not req.specifier.contains(locked.get(name, ""), prereleases=True):
                raise PreflightError(
                    f"{name} {locked.get(name)} (uv.lock) does not satisfy {who}'s {req}"
                )
        elif name in image:
            recorded = re.match(r"(==|>=)\s*(\S+)", image[name])
            if recorded is None and str(req.specifier):
                if who.startswith("ssd-"):  # the project's own floor
                    unverified.append(f"{req}")
                else:
                    raise PreflightError(
                        f"{req} (needed by {who}) is preinstalled on the GPU image at a version"
                        " infra/device_image.txt does not record: add it to infra/device_wheels.txt"
                    )
            elif recorded and not req.specifier.contains(recorded.group(2), prereleases=True):
                raise PreflightError(
                    f"{who} needs {req}; the GPU image has {name}{image[name]}: add it to"
                    " infra/device_wheels.txt"
                )
        else:
            raise PreflightError(
                f"{name} (needed by {who}) is neither carried (infra/device_wheels.txt) nor on the"
                " GPU image (infra/device_image.txt): add it to infra/device_wheels.txt"
            )
        if name in seen:
            continue
        seen.add(name)
        if name in carried:  # the image's own packages bring their own requirements
            version, requires = carried_requires(name, wheels)
            if version != locked.get(name):
                raise PreflightError(
                    f"{name} {version} is installed or in .whl/, uv.lock says {locked.get(name)}:"
                    " run uv sync, or infra/device_wheels.sh"
                )
            todo += [(r, f"{name} {version}") for r in requires]
    return len(seen), unverified


def check_imports() -> None:
    """Import :data:`CHECK_MODULES`; raise with the first that fails."""
    for module in CHECK_MODULES:
        try:
            importlib.import_module(module)
        except Exception as error:  # any import failure stops the check
            raise PreflightError(f"import {module}: {type(error).__name__}: {error}") from None


def check_compiler() -> str:
    """The C compiler Inductor will use (``$CC``, else cc/gcc/clang) compiles a file."""
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        raise PreflightError("no C compiler (cc, gcc or clang) on PATH: torch.compile needs one")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.c"
        src.write_text("int main(void) { return 0; }\n")
        proc = subprocess.run([cc, str(src), "-o", str(Path(tmp) / "t")], capture_output=True,
                              text=True, timeout=20)  # fmt: skip
        if proc.returncode != 0:
            raise PreflightError(f"{cc} cannot compile a C file: {proc.stderr.strip()[:200]}")
    return cc


def check_tiny_compile() -> str:
    """One ``torch.compile`` (Inductor) of a tiny function on the device; returns the device."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # the same console as a compiled run: no "No CUDA runtime" notice
        from ssd_train.report.console import quiet_cpu_compile_notice

        quiet_cpu_compile_notice()
    x = torch.arange(16, dtype=torch.float32, device=device)
    try:
        got = torch.compile(lambda t: (t * 2 + 1).relu().sum())(x)
        if float(got) != float((x * 2 + 1).relu().sum()):
            raise PreflightError(f"torch.compile on {device} gave a wrong result")
    except PreflightError:
        raise
    except Exception as error:  # whatever Dynamo, Inductor or the driver raise
        raise PreflightError(
            f"torch.compile on {device}: {type(error).__name__}: {error}"
        ) from None
    return device


def run_preflight() -> int:
    """All checks; one line on stdout; 0 when everything is there, else 4."""
    start = time.monotonic()
    try:
        check_imports()
        count, unverified = check_requirements()
        cc = check_compiler()
        device = check_tiny_compile()
    except PreflightError as error:
        print(f"preflight FAILED: {error}", flush=True)
        return 4
    import torch

    where = (
        f"CUDA {torch.cuda.get_device_name()}"
        if device == "cuda"
        else "no CUDA device: the CPU compile only (Triton and CUDA graphs not checked)"
    )
    note = f"; checked live only: {', '.join(sorted(set(unverified)))}" if unverified else ""
    print(
        f"preflight ok in {time.monotonic() - start:.1f} s: python {sys.version.split()[0]},"
        f" torch {torch.__version__}, {where}; {len(CHECK_MODULES)} imports, {count}"
        f" distributions resolved (carried or on the GPU image), compiler {cc}{note}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``--requirements``: only the requirement walk (what ``infra/device_wheels.sh`` runs after a
    download); else the whole preflight."""
    args = sys.argv[1:] if argv is None else argv
    if "--requirements" not in args:
        return run_preflight()
    try:
        count, unverified = check_requirements()
    except PreflightError as error:
        print(f"wheel list FAILED: {error}")
        return 4
    print(f"wheel list ok: {count} distributions resolved, carried or on the GPU image"
          f" (checked live on the machine: {', '.join(sorted(set(unverified))) or 'nothing'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
