"""The console of a run: device/precision line, final lines with the continue command, the
reporter's data counts, and (slow) the captured output of a short real run."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from ssd_train.report.config import LoggingConfig
from ssd_train.report.console import (
    continue_command,
    data_summary_line,
    device_precision_line,
    final_lines,
)
from ssd_train.report.progress import Progress
from ssd_train.report.reporter import RunReporter

from tests.helpers.cli import cli_env, run_ssd_train

ROOT = Path(__file__).resolve().parents[2]


# -- device and precision ----------------------------------------------------------------------
def test_device_line_says_why() -> None:
    cpu = torch.device("cpu")
    assert device_precision_line(cpu, "auto", None, False) == (
        "device cpu, precision fp32 (this CPU has no bf16 instructions, where bf16 would be"
        " slower; --precision bf16 forces it)"
    )
    line = device_precision_line(cpu, "auto", torch.bfloat16, True)
    assert line.startswith("device cpu, precision bf16 (this CPU has bf16 instructions")
    assert device_precision_line(cpu, "bf16", torch.bfloat16, False) == (
        "device cpu, precision bf16 (--precision bf16)"
    )
    assert device_precision_line(cpu, "fp32", None, True).endswith("(--precision fp32)")
    cuda = device_precision_line(torch.device("cuda", 0), "auto", torch.bfloat16, False)
    assert cuda.startswith("device cuda:0") and "precision bf16 (bf16 autocast on CUDA" in cuda


# -- the continue command ----------------------------------------------------------------------
def test_continue_command_keeps_the_settings_and_points_at_the_run() -> None:
    argv = ["--config", "infra/configs/cpu.toml", "--run-dir=runs/a", "--data.batch-size", "4",
            "--schedule.max-steps", "30", "--checkpoint.resume", "never"]  # fmt: skip
    env = {"SSD_OPTIM__MOMENTUM": "0.8", "HOME": "/x", "SSD_RUN_DIR": "old"}
    cmd = continue_command("runs/b", "stop_requested", argv=argv, environ=env)
    assert cmd == (
        "SSD_OPTIM__MOMENTUM=0.8 uv run ssd-train --config infra/configs/cpu.toml"
        " --data.batch-size 4 --schedule.max-steps 30 --run-dir runs/b --checkpoint.resume auto"
    )
    # max_steps ended it: continuing means lifting that limit
    cmd = continue_command("runs/b", "max_steps", argv=argv, environ={})
    assert "--schedule.max-steps" not in cmd and cmd.endswith(
        "--run-dir runs/b --checkpoint.resume auto"
    )
    # the epochs ran out without the target: more epochs
    cmd = continue_command("runs/b", "max_epochs", max_epochs=8, argv=["--schedule.max-epochs=8"],
                           environ={})  # fmt: skip
    assert cmd == "uv run ssd-train --run-dir runs/b --schedule.max-epochs 16"
    # paths with spaces are quoted
    assert "--run-dir 'my runs/c'" in continue_command("my runs/c", "stop_requested", argv=[],
                                                       environ={})  # fmt: skip


def test_continue_command_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    cmd = continue_command("runs/b", "stop_requested", argv=["--data.root", "/coco"], environ={})
    assert (
        cmd == "uv run torchrun --nproc-per-node 8 -m ssd_train --data.root /coco --run-dir runs/b"
    )


@pytest.mark.parametrize(
    ("status", "reason", "best", "says"),
    [
        ("aborted", "stop_requested", None, "stopped on request; no evaluation yet"),
        ("aborted", "ctrl_c", 0.1, "stopped by Ctrl-C; best mAP 0.1000"),
        ("aborted", "max_steps", 0.1234, "stopped at schedule.max_steps; best mAP 0.1234"),
        ("aborted", "max_epochs", 0.2012, "target missed: best mAP 0.2012 (target 0.23)"),
        ("aborted", "interrupted", None, "interrupted (interrupted); no evaluation yet"),
        ("aborted", "error", None, "failed (the error follows); no evaluation yet"),
        ("success", "target_met", 0.2345, "target met: mAP 0.2345 (target 0.23)"),
    ],
)
def test_final_lines_for_every_ending(
    status: str, reason: str, best: float | None, says: str, tmp_path: Path
) -> None:
    (tmp_path / "checkpoints" / "step-20").mkdir(parents=True)
    lines = final_lines(
        status=status, reason=reason, epochs=3, steps=20, best_map=best, run_dir=tmp_path,
        target_map=0.23, max_epochs=8, data_summary="training data: ...", argv=[], environ={},
    )  # fmt: skip
    text = "\n".join(lines).splitlines()
    assert text[0] == "training data: ..."
    assert says in text[1] and "3 epochs, 20 steps" in text[1] and str(tmp_path) in text[1]
    assert "0.0000" not in "\n".join(text)  # never a made-up mAP
    if status == "success":
        assert len(text) == 2
    else:
        assert text[-1].strip().startswith("uv run ssd-train") and str(tmp_path) in text[-1]
        assert "continue this run from its latest checkpoint" in text[-2]


def test_final_lines_without_a_checkpoint_say_so(tmp_path: Path) -> None:
    lines = final_lines(status="aborted", reason="stop_requested", epochs=0, steps=3,
                        best_map=None, run_dir=tmp_path, argv=[], environ={})  # fmt: skip
    assert "no checkpoint was saved" in lines[-1]


def test_data_summary_line() -> None:
    line = data_summary_line(
        {"images": 96, "bad_image": 2, "dropped_boxes": 5, "size_mismatch": 1,
         "index_dropped_degenerate_boxes": 3},
        {"bad_image": 1, "size_mismatch": 0},
    )  # fmt: skip
    assert line == (
        "training data: 96 images read, 2 unreadable skipped, 1 size mismatches, 5 boxes beyond"
        " data.max_boxes dropped, 3 degenerate boxes dropped; validation: 1 unreadable left out,"
        " 0 size mismatches"
    )


def test_reporter_final_writes_counts_results_png_and_the_command(tmp_path: Path) -> None:
    out = io.StringIO()
    reporter = RunReporter(tmp_path, LoggingConfig(progress="lines"), rank=0, max_epochs=8,
                           target_map=0.23, settings={})  # fmt: skip
    reporter.progress = Progress(max_epochs=8, mode="lines", stream=out)
    reporter.data_counts({"images": 8, "bad_image": 1}, {"bad_image": 0}, step=2)
    reporter.final("aborted", "max_steps", epochs=0, steps=2, best_map=None)
    reporter.close()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [
        {**records[0], "kind": "data", "step": 2, "train": {"images": 8, "bad_image": 1}}
    ]
    assert (tmp_path / "results.png").is_file()  # on every ending, no evaluation needed
    lines = out.getvalue().splitlines()
    assert "1 unreadable skipped" in lines[0] and "no evaluation yet" in lines[1]
    assert f"--run-dir {tmp_path}" in lines[-1]


def test_reporter_close_writes_results_png_when_final_was_not_called(tmp_path: Path) -> None:
    reporter = RunReporter(tmp_path, LoggingConfig(progress="off"), rank=0, max_epochs=1,
                           target_map=0.23, settings={})  # fmt: skip
    reporter.close(1)
    assert (tmp_path / "results.png").is_file()


# -- a short real run (the trainer in a subprocess) -------------------------------------------
def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_ssd_train(*args, env=cli_env(COLUMNS="80"), timeout=1500, cwd=cwd)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_console_of_a_short_run_and_its_continue_command(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "--run-dir", str(run_dir),
        "--synthetic.cache-dir", str(tmp_path / "synthetic"),
        "--synthetic.train-images", "8",
        "--synthetic.val-images", "4",
        "--data.batch-size", "4",
        "--data.num-workers", "0",
        "--compile", "false",
        "--schedule.max-steps", "2",
        "--logging.progress", "lines",
    ]  # fmt: skip
    done = _run(args, ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert not any(":::MLLOG" in line for line in lines)  # mlperf.log only
    assert (run_dir / "mlperf.log").read_text().startswith(":::MLLOG")
    assert not [line for line in lines if "warning" in line.lower()]
    assert any(line.startswith("device cpu, precision ") for line in lines)
    # the progress row of step 1 (before the first logging step) is there and has img/s and ETA
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["Epoch", "Step"])
    row = lines[header + 1].split()
    assert row[1].startswith("1/") and row[6] not in ("-", "0.0") and ":" in row[-1], lines
    assert all(len(line) <= 80 for line in lines[header : header + 3])
    # the last 5 lines of stdout: how it ended, and the command that continues it
    tail = done.stdout.splitlines()[-5:]
    assert any("stopped at schedule.max_steps" in line for line in tail), tail
    command = next(line.strip() for line in tail if line.strip().startswith("uv run ssd-train"))
    assert f"--run-dir {run_dir}" in command and "--schedule.max-steps" not in command
    assert (run_dir / "results.png").is_file()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "data" and r["train"]["images"] >= 8 for r in records)
    # the printed command, run (one more step), continues the run from its checkpoint
    words = shlex.split(command)
    assert words[:3] == ["uv", "run", "ssd-train"]
    again = _run([*words[3:], "--schedule.max-steps", "3"], ROOT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from" in again.stdout and "step 2" in again.stdout
    assert "3 steps" in again.stdout.splitlines()[-2] + again.stdout.splitlines()[-1] + "".join(
        again.stdout.splitlines()[-5:]
    )


# -- ssd-data and ssd-eval --help --------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("ssd_data.cli", []),
        ("ssd_data.cli", ["synth"]),
        ("ssd_data.cli", ["download"]),
        ("ssd_eval.cli", []),
        ("ssd_eval.cli", ["bench"]),
    ],
)
def test_other_commands_help_is_plain(
    module: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for internal in ("(default: None)", "(default: False)", "`", "``", str(Path.home())):
        assert internal not in text, (internal, text)
    options = [line for line in text.splitlines() if line.startswith("  --")]
    assert options or argv == [], text
    for line in options:  # every option says what it is
        head = line.strip().split("  ")[0]
        assert head == head.lower() or head.split()[-1].isupper(), line  # DIR, N, FILE, ...
    if not argv:
        assert "examples:" in text


# -- no warnings from checkpoint saves in a single process --------------------------------------
@pytest.mark.parametrize("asynchronous", [False, True])
def test_checkpoint_save_and_load_print_no_single_process_warning(
    asynchronous: bool, tmp_path: Path
) -> None:
    import warnings

    from ssd_train.checkpoint.manager import CheckpointConfig, CheckpointManager, training_state
    from torch import nn

    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = CheckpointConfig(asynchronous=asynchronous)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # what a plain `python -m ssd_train` shows
        mgr = CheckpointManager(cfg, tmp_path, fingerprint={"global_batch_size": 8})
        mgr.save(1, training_state(model, opt, sched={}, data={}), epoch=0, block=True)
        mgr.wait()
        mgr.load(mgr.resume_path(), training_state(model, opt))
        mgr.close()
    texts = [str(w.message) for w in caught]
    assert not [t for t in texts if "torch.distributed is disabled" in t], texts
