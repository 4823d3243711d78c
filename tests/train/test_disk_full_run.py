"""An ``ssd_train`` run whose run folder fills up: exit 4, one message, resume after freeing.

The run trains the tiny stand-in network (``tests/helpers/cli_standin.py``: the real CLI and
trainer, a ~0.7 MB checkpoint) in a process forked from one that has imported torch already
(``tests/helpers/prelaunch.py``). Its run folder lies on a 1100 kB tmpfs: the first checkpoint
fits, the second does not. Where mounting is not permitted (not root, no CAP_SYS_ADMIN) the same
run goes in-process with DCP's data files of the second checkpoint written to ``/dev/full``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssd_train.checkpoint.files import latest_complete, list_checkpoints, step_dir

from tests.helpers.cli import cli_env, run_ssd_train
from tests.helpers.standin import tiny_detector

SMALL = "1100k"  # one stand-in checkpoint (~712 kB on disk) and the logs fit, two do not
FREED = "16m"


def _args(run: Path, cache: Path, max_steps: int) -> list[str]:
    return [
        f"--run-dir={run}", "--seed=3", f"--synthetic.cache-dir={cache}", "--synthetic.train-images=8",
        "--synthetic.val-images=2", "--data.batch-size=2", "--data.eval-batch-size=2", "--data.num-workers=0",
        "--model.backbone-weights=none", "--logging.log-every=1", "--num-threads=1",
        "--checkpoint.every-steps=2", f"--schedule.max-steps={max_steps}", "--logging.plots=false",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return cli_env(OMP_NUM_THREADS="1")


def _mount(point: Path, size: str, *options: str) -> bool:
    if shutil.which("mount") is None or os.environ.get("SSD_TEST_NO_MOUNT"):
        return False
    opts = ",".join([*options, f"size={size}"])
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 150 MB tmpfs (unmounted afterwards), or None where mounting is not permitted."""
    point = tmp_path / "small"
    point.mkdir()
    if not _mount(point, SMALL):
        yield None
        return
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _check_failure(out: str, run: Path) -> None:
    """One message naming the checkpoint, the error, the sizes and the checkpoint to resume from."""
    first = step_dir(run, 2)
    lines = [line for line in out.splitlines() if line.startswith("ssd-train: ")]
    assert len(lines) == 1, out[-4000:]
    line = lines[0]
    assert line.startswith(f"ssd-train: cannot write checkpoint {step_dir(run, 4)}: No space left")
    # the size it names is what the complete step-2 folder holds (within 10%)
    need = re.search(
        r"it needs about ([0-9.]+) (kB|MB), ([0-9.]+ .?B) free on that file system", line
    )
    assert need, line
    needed = float(need.group(1)) * {"kB": 1e3, "MB": 1e6}[need.group(2)]
    on_disk = sum(p.stat().st_size for p in first.iterdir())
    assert 0.9 * on_disk <= needed <= 1.1 * on_disk, (need.group(0), on_disk)
    assert f"resume from {first}" in line
    assert "Traceback" not in out and "CheckpointException" not in out, out[-4000:]
    # the torn step-4 is gone; step-2 is the newest complete checkpoint
    assert not step_dir(run, 4).exists()
    newest, skipped = latest_complete(run)
    assert newest is not None and newest.path == first and not skipped, list_checkpoints(run)


def test_full_run_folder_exits_4_and_resumes_after_space_is_freed(
    small_disk, tmp_path, tmp_path_factory, monkeypatch, capsys, prelaunched
):
    cache = Path(tmp_path_factory.getbasetemp()) / "synthetic-cache"
    if small_disk is not None:
        run = small_disk / "run"
        done = run_ssd_train(*_args(run, cache, 6), standin=True, prelaunched=True, env=_env())
        out = done.stdout + done.stderr
        assert done.returncode == 4, out[-4000:]
        assert f"free on the file system of the run folder {run}" in out  # the start-up warning
        _check_failure(out, run)
        assert _mount(small_disk, FREED, "remount")  # space freed
        done = run_ssd_train(*_args(run, cache, 3), standin=True, prelaunched=True, env=_env())
        out = done.stdout + done.stderr
    else:  # no mount: the second checkpoint's data files go to /dev/full, in this process
        import torch.distributed.checkpoint.filesystem as dcp_fs
        from ssd_train import components
        from ssd_train.__main__ import main

        original = dcp_fs.FileSystem.create_stream

        @contextlib.contextmanager
        def create_stream(self, path, mode):  # DCP's signature
            full = str(path).endswith(".distcp") and "step-4" in str(path)
            with open("/dev/full", mode) if full else original(self, path, mode) as stream:
                yield stream

        run = tmp_path / "run"
        for key, value in _env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(dcp_fs.FileSystem, "create_stream", create_stream)
        monkeypatch.setattr(components, "build_detector", tiny_detector)
        assert main(_args(run, cache, 6)) == 4
        captured = capsys.readouterr()
        _check_failure(captured.out + captured.err, run)
        monkeypatch.setattr(dcp_fs.FileSystem, "create_stream", original)
        code = main(_args(run, cache, 3))
        captured = capsys.readouterr()
        out = captured.out + captured.err
        assert code == 0, out[-4000:]
    assert f"resumed from {step_dir(run, 2)} (step 2," in out, out[-4000:]
    assert latest_complete(run)[0].path == step_dir(run, 3)
    assert (run / "last.pt").is_file()
