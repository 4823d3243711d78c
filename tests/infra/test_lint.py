"""Static checks of the launch files: shellcheck on every shell script, hadolint on the Dockerfile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.infra import REPO

SKIP_DIRS = {".git", ".venv", "node_modules", ".pytest_cache", ".ruff_cache"}
INSTALL_HINT = (
    "run infra/slurm/install-deps.sh (it installs shellcheck, hadolint, slurm-wlm, munge)"
)


def _shell_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        if any(part in SKIP_DIRS for part in path.relative_to(REPO).parts) or not path.is_file():
            continue
        if path.suffix in (".sh", ".sub", ".bash"):
            files.append(path)
        elif path.suffix == "" and path.stat().st_size < 1_000_000:
            with path.open("rb") as f:
                first = f.readline(100)
            if first.startswith(b"#!") and (b"bash" in first or first.rstrip().endswith(b"/sh")):
                files.append(path)
    return sorted(files)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return path


def test_the_shell_files_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in _shell_files()}
    expected = {
        "infra/slurm/run.sub",
        "infra/slurm/local-cluster.sh",
        "infra/slurm/install-deps.sh",
        "infra/run_and_time.sh",
        "infra/download_dataset.sh",
        "infra/docker/run_with_docker.sh",
        "infra/configs/config_DGXA100.sh",
        ".ci/run",
    }
    assert expected <= names


def test_shellcheck_is_clean() -> None:
    files = _shell_files()
    result = subprocess.run(
        [_tool("shellcheck"), "--external-sources", "--shell=bash", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"shellcheck findings:\n{result.stdout}{result.stderr}"


def test_hadolint_is_clean() -> None:
    dockerfile = REPO / "infra" / "docker" / "Dockerfile"
    result = subprocess.run(
        [_tool("hadolint"), str(dockerfile)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_scripts_are_executable() -> None:
    for path in _shell_files():
        if "configs" in path.parts:
            continue  # sourced, not run
        assert path.stat().st_mode & 0o111, f"{path.relative_to(REPO)} is not executable (chmod +x)"
