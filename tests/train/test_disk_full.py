"""Write failures of the environment: checkpoints, best.pt/last.pt, metrics.jsonl, mlperf.log.

A full disk comes from the kernel itself where possible: writes go to ``/dev/full`` (every write
fails with ENOSPC), or the run folder lies on a small tmpfs (``test_disk_full_run.py``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.filesystem as dcp_fs
from ssd_train.checkpoint.files import latest_complete, step_dir
from ssd_train.checkpoint.manager import (
    CheckpointConfig,
    CheckpointManager,
    apply_training_state,
    training_state,
)
from ssd_train.checkpoint.weights import export_weights, read_exported
from ssd_train.report.metrics import MetricsWriter, StepMetrics
from ssd_train.report.mlperf_log import MLPerfLogger
from ssd_train.resilience import environment
from ssd_train.resilience.environment import (
    EnvironmentFailure,
    checkpoint_bytes,
    low_space_warning,
)
from torch import nn

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(  # ~1 MB of weights + momentum: file overheads are small beside it
        nn.Conv2d(3, 64, 3),
        nn.BatchNorm2d(64),
        nn.Flatten(),
        nn.Linear(64, 2048),
        nn.Linear(2048, 2),
    )


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(2, 3, 3, 3)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _setup(
    run: Path, asynchronous: bool
) -> tuple[nn.Module, torch.optim.Optimizer, CheckpointManager]:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, opt)
    cfg = CheckpointConfig(asynchronous=asynchronous)
    return model, opt, CheckpointManager(cfg, run, fingerprint={"global_batch_size": 2})


@contextlib.contextmanager
def _dcp_writes_fail(error: BaseException | None = None) -> Iterator[None]:
    """DCP's data files go to /dev/full (the kernel's ENOSPC), or raise ``error`` on opening."""
    original = dcp_fs.FileSystem.create_stream

    @contextlib.contextmanager
    def create_stream(self, path, mode):  # DCP's signature
        if not str(path).endswith(".distcp"):
            with original(self, path, mode) as stream:
                yield stream
        elif error is not None:
            raise error
        else:
            with open(DEV_FULL, mode) as stream:
                yield stream

    dcp_fs.FileSystem.create_stream = create_stream
    try:
        yield
    finally:
        dcp_fs.FileSystem.create_stream = original


@needs_dev_full
@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, asynchronous):
    model, opt, mgr = _setup(tmp_path, asynchronous)
    first = mgr.save(1, training_state(model, opt), block=True)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt)
    with _dcp_writes_fail(), pytest.raises(EnvironmentFailure) as failed:
        mgr.save(2, training_state(model, opt), block=True)
    message = str(failed.value)
    assert message.startswith(f"cannot write checkpoint {step_dir(tmp_path, 2)}: No space left")
    # the size it names is about what the complete step-1 folder holds on disk
    found = re.search(r"it needs about ([0-9.]+) (kB|MB)", message)
    assert found, message
    named = float(found.group(1)) * (1000 if found.group(2) == "kB" else 1000**2)
    on_disk = sum(p.stat().st_size for p in first.iterdir())
    assert 0.9 * on_disk <= named <= 1.1 * on_disk, (named, on_disk)
    assert "free on that file system" in message and f"resume from {first}" in message
    assert failed.value.errno == errno.ENOSPC
    # the torn folder is gone (its space comes back); the previous checkpoint is the newest
    assert not step_dir(tmp_path, 2).exists()
    newest, skipped = latest_complete(tmp_path)
    assert newest is not None and newest.path == first and not skipped
    # after space is freed, a new process resumes from it and saving works again
    fresh, fresh_opt, again = _setup(tmp_path, asynchronous)
    path = again.resume_path()
    assert path == first
    restored = again.load(path, training_state(fresh, fresh_opt))
    apply_training_state(fresh, fresh_opt, restored.state)
    for key, value in saved.items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert again.save(2, training_state(fresh, fresh_opt), block=True) == step_dir(tmp_path, 2)
    assert latest_complete(tmp_path)[0].path == step_dir(tmp_path, 2)


def test_permission_denied_names_the_folder_and_what_to_do(tmp_path):
    model, opt, mgr = _setup(tmp_path, asynchronous=False)
    target = step_dir(tmp_path, 1) / "__0_0.distcp"
    denied = PermissionError(errno.EACCES, "Permission denied", str(target))
    with _dcp_writes_fail(denied), pytest.raises(EnvironmentFailure) as failed:
        mgr.save(1, training_state(model, opt))
    message = str(failed.value)
    assert f"checkpoint {step_dir(tmp_path, 1)}: Permission denied ({target})" in message
    assert "write permission" in message and "no complete checkpoint exists yet" in message


def test_a_write_error_without_an_os_error_is_a_full_disk_only_when_space_is_short(
    tmp_path, monkeypatch
):
    # torch's zip writer reports a full disk as a RuntimeError without errno
    model, opt, mgr = _setup(tmp_path, asynchronous=False)
    zip_error = RuntimeError(
        "[enforce fail at inline_container.cc:671] . unexpected pos 704 vs 598"
    )
    with _dcp_writes_fail(zip_error), pytest.raises(dcp.CheckpointException) as bug:
        mgr.save(1, training_state(model, opt))
    assert "unexpected pos" in str(bug.value)  # plenty of space: a bug, DCP's error kept as is
    monkeypatch.setattr(environment, "free_bytes", lambda path: 1000)
    with _dcp_writes_fail(zip_error), pytest.raises(EnvironmentFailure) as full:
        mgr.save(1, training_state(model, opt))
    assert "No space left on device" in str(full.value) and "1.0 kB free" in str(full.value)


def test_weights_files_are_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    old = _model()
    export_weights(old, path, {"map": 0.1})
    new = _model()
    with torch.no_grad():
        new[0].weight.add_(1.0)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ssd_train.checkpoint.files.os.fsync", full)
    with pytest.raises(EnvironmentFailure) as failed:
        export_weights(new, path, {"map": 0.2})
    assert str(failed.value).startswith(f"cannot write weights file {path}: No space left")
    assert "it needs about" in str(failed.value)
    # the old file is whole and unchanged; no temporary file is left behind
    kept = read_exported(path)
    assert kept.metadata["map"] == 0.1
    assert torch.equal(kept.state_dict["0.weight"], old.state_dict()["0.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


@needs_dev_full
def test_metrics_file_on_a_full_disk(tmp_path):
    (tmp_path / "metrics.jsonl").symlink_to(DEV_FULL)
    writer = MetricsWriter(tmp_path)
    metrics = StepMetrics(step=1, epoch=0, loss={"total": 1.0}, lr=0.1, images_per_sec=1.0,
                          data_wait_share=0.0)  # fmt: skip
    with pytest.raises(EnvironmentFailure) as failed:
        writer.log_step(metrics)
    assert str(failed.value).startswith(
        f"cannot write metrics file {tmp_path / 'metrics.jsonl'}: No space left on device"
    )
    writer._file = None  # the stream holds unwritable bytes; nothing more to flush


@needs_dev_full
def test_mlperf_log_on_a_full_disk_is_one_error_not_a_logging_traceback(tmp_path, capsys):
    mllog = MLPerfLogger(tmp_path)
    handler = next(h for h in mllog._logger.handlers if isinstance(h, logging.FileHandler))
    handler.stream = open(DEV_FULL, "w", encoding="utf-8")  # noqa: SIM115 (closed by the logger)
    with pytest.raises(EnvironmentFailure) as failed:
        mllog.init_start()
    assert str(failed.value).startswith(
        f"cannot write MLPerf log {tmp_path / 'mlperf.log'}: No space left on device"
    )
    mllog.init_stop()  # later records are dropped, not raised again
    mllog.run_start()
    mllog.close()  # the failed stream's flush is the error already reported
    assert "Logging error" not in capsys.readouterr().err


def test_checkpoint_size_estimate_matches_the_files_written(tmp_path):
    model = nn.Sequential(nn.Linear(256, 512), nn.BatchNorm1d(512), nn.Linear(512, 256))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before_first_step = checkpoint_bytes(model, opt)  # no momentum buffers yet: estimated
    model(torch.randn(4, 256)).sum().backward()
    opt.step()
    assert checkpoint_bytes(model, opt) == before_first_step
    mgr = CheckpointManager(CheckpointConfig(asynchronous=False), tmp_path)
    folder = mgr.save(1, training_state(model, opt))
    written = sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(".distcp"))
    params = sum(p.numel() for p in model.parameters())
    assert written >= 2 * 4 * params  # weights and momentum, float32
    assert abs(written - before_first_step) / written < 0.05


def test_low_space_warning_compares_with_two_checkpoints(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    warning = low_space_warning(tmp_path, free)  # two need twice what is free
    assert warning is not None and str(tmp_path) in warning
    assert f"(2 x {environment.human_bytes(free)})" in warning
    assert low_space_warning(tmp_path, 1000) is None


def test_a_picture_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch):
    from ssd_train.report.config import LoggingConfig
    from ssd_train.report.reporter import RunReporter

    reporter = RunReporter(
        tmp_path, LoggingConfig(), rank=0, max_epochs=1, target_map=0.23, settings={}
    )
    said: list[str] = []
    monkeypatch.setattr(reporter, "message", said.append)

    def full(run_dir: Path, target_map: float) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ssd_train.report.plots.plot_results", full)
    reporter.plot()  # the run goes on: a picture is not worth a run
    assert len(said) == 1
    assert said[0].startswith(
        f"could not plot results: cannot write {tmp_path / 'results.png'}: No space left on device;"
    )
    assert said[0].endswith("free on that file system. Free space there or choose another folder.")
    reporter.close(0)


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (
            OSError(errno.EROFS, "Read-only file system", "/data/run/config.json"),
            "ssd-train: cannot write /data/run/config.json: Read-only file system."
            " Choose a folder on a writable file system.",
        ),
        (
            OSError(errno.ENOSPC, "No space left on device"),
            "ssd-train: the environment failed: No space left on device",
        ),
    ],
)
def test_other_write_errors_of_a_run_exit_4_with_one_line(
    error: OSError, says: str, tmp_path, monkeypatch, capsys
):
    import ssd_train.__main__ as cli

    def fails(settings: object) -> int:
        raise error

    monkeypatch.setattr(cli, "_run", fails)
    assert cli.main([f"--run-dir={tmp_path / 'run'}", "--model.backbone-weights=none"]) == 4
    assert capsys.readouterr().err == says + "\n"
