"""The exit-code contract of the training command line, on launched processes (interfaces.md):
0 done, 2 bad settings or input (one message), 3 non-finite loss (one message), 1 a bug (its
traceback). Exit 4 (environment) and 130 (Ctrl-C) have their own tests.

The runs that train go through the real ``ssd_train.__main__.main`` in a process of their own with
the tiny stand-in network (``tests/helpers/cli_standin.py``), forked from one that has imported
torch already (``tests/helpers/prelaunch.py``); the settings error goes through both ``python -m
ssd_train`` and the installed ``ssd-train`` script, launched for real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import cli_env, run_ssd_train
from tests.helpers.logs import events, read_mllog

pytestmark = pytest.mark.usefixtures("prelaunched")


def _small_run(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--run-dir", str(tmp_path / "run"), "--synthetic.cache-dir", str(tmp_path / "cache"),
        "--synthetic.train-images", "4", "--synthetic.val-images", "2", "--data.batch-size", "2",
        "--data.eval-batch-size", "2", "--data.num-workers", "0", "--data.max-boxes", "24",
        "--schedule.max-epochs", "1", "--schedule.eval-epochs", "[1]", "--logging.log-every", "1",
        "--logging.progress", "lines", "--logging.plots", "false", "--checkpoint.enabled", "false",
        "--num-threads", "1", *extra,
    ]  # fmt: skip


def _one_message(stderr: str) -> str:
    """The one ``ssd-train:`` line, the last of stderr (progress bars may come before it)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    messages = [line for line in lines if line.startswith("ssd-train")]
    assert len(messages) == 1 and lines[-1] == messages[0], stderr[-3000:]
    assert "Traceback" not in stderr
    return messages[0]


def test_finished_run_exits_0(tmp_path: Path) -> None:
    done = run_ssd_train(*_small_run(tmp_path), standin=True, prelaunched=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    log = read_mllog(tmp_path / "run" / "mlperf.log")
    assert events(log, "run_stop")[0]["metadata"]["status"] == "aborted"  # target missed
    assert (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.parametrize("how", ["module", "script"])
def test_bad_setting_exits_2_with_one_message(tmp_path: Path, how: str) -> None:
    done = run_ssd_train(
        "--run-dir", str(tmp_path / "run"), "--data.batch-size", "0", script=how == "script"
    )
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "data.batch_size" in _one_message(done.stderr)
    assert not (tmp_path / "run").exists()


def test_a_bad_setting_is_answered_before_torch_is_imported() -> None:
    """Settings are checked first: a mistake costs half a second, not torch's import (~4 s)."""
    program = (
        "import sys; from ssd_train.__main__ import main; code = main(['--data.batch-size', '0']);"
        " sys.exit(10 if 'torch' in sys.modules else code)"
    )
    done = subprocess.run([sys.executable, "-c", program], env=cli_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]


def test_non_finite_loss_exits_3_naming_the_step(tmp_path: Path) -> None:
    done = run_ssd_train(*_small_run(tmp_path, "--resilience.faults.nan-loss-at-step", "1"),
                         standin=True, prelaunched=True)  # fmt: skip
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    message = _one_message(done.stderr)
    assert message.startswith("ssd-train: non-finite loss at step 1 (epoch 1)"), message
    log = read_mllog(tmp_path / "run" / "mlperf.log")
    assert events(log, "run_stop")[0]["metadata"]["status"] == "aborted"


def test_unexpected_error_exits_1_with_its_traceback(tmp_path: Path) -> None:
    done = run_ssd_train(*_small_run(tmp_path), standin=True, prelaunched=True,
                          env=cli_env(INJECT_BUG="1"))  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith("ZeroDivisionError: a bug inside the training loop")
    log = read_mllog(tmp_path / "run" / "mlperf.log")
    assert events(log, "run_stop")[0]["metadata"]["status"] == "aborted"  # the log is closed
