"""Console progress: fixed-width lines (Slurm logs), the rich bar, ETA, COCO table."""

from __future__ import annotations

import io
import re

from rich.console import Console
from ssd_train.report.metrics import StepMetrics
from ssd_train.report.progress import Progress, format_eta, format_header, format_line


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def metrics(step: int, loss: float = 5.1234) -> StepMetrics:
    return StepMetrics(
        step=step,
        epoch=2,
        loss={"total": loss, "loc": 1.234, "conf": 3.889},
        lr=0.09,
        images_per_sec=1234.5,
        data_wait_share=0.125,
        memory_gib=3.21,
    )


def test_format_eta() -> None:
    assert format_eta(3725.4) == "1:02:05"
    assert format_eta(59.6) == "0:01:00"
    assert format_eta(None) == "-:--:--"
    assert format_eta(float("nan")) == "-:--:--"


def test_line_is_fixed_width_and_aligned_with_header() -> None:
    header = format_header(("total", "loc", "conf"))
    line = format_line(
        metrics(1), max_epochs=80, step_in_epoch=7, steps_in_epoch=129, eta_seconds=83
    )
    slow = format_line(
        metrics(1, loss=float("nan")), max_epochs=80, step_in_epoch=120, steps_in_epoch=129,
        eta_seconds=None,
    )  # fmt: skip
    assert len(header) == len(line) == len(slow)
    # every value ends in the column of its title
    for title, value in [("Epoch", "3/80"), ("Step", "7/129"), ("loss", "5.123"), ("loc", "1.234"),
                         ("conf", "3.889"), ("lr", "9.00e-02"), ("img/s", "1234.5"),
                         ("data", "12%"), ("mem", "3.21G"), ("ETA", "0:01:23")]:  # fmt: skip
        assert header.index(title) + len(title) == line.index(value) + len(value), title
    assert "nan" in slow and "-:--:--" in slow


def test_lines_mode_prints_step_1_logging_steps_and_eta() -> None:
    out = io.StringIO()  # not a TTY: "auto" picks plain lines
    clock = FakeClock()
    progress = Progress(
        max_epochs=80, mode="auto", clock=clock, stream=out, log_every=25, min_interval_s=60.0
    )
    assert progress.mode == "lines"
    progress.start_epoch(2, steps=100)
    for step in range(1, 101):
        clock.now += 0.5  # 0.5 s per step of 8 images, 0.1 s of it waiting for data
        progress.advance(images=8, data_wait_s=0.1, step=step)
        if step % 25 == 0:
            progress.log(metrics(step))
    progress.end_epoch()
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["Epoch", "Step", "loss", "loc", "conf", "lr", "img/s", "data",
                                "mem", "ETA"]  # fmt: skip
    assert len(lines) == 6  # header, step 1 (no loss yet), steps 25, 50, 75, 100
    # step 1: no loss or lr yet, but img/s (8 images in 0.5 s), data share and ETA (99 * 0.5 s)
    assert lines[1].split() == ["3/80", "1/100", "-", "-", "-", "-", "16.0", "20%", "-",
                                "0:00:50"]  # fmt: skip
    # after 25 of 100 steps at 0.5 s each: 75 steps * 0.5 s = 37.5 s left
    assert lines[2].split()[1] == "25/100"
    assert lines[2].split()[-1] == "0:00:38"
    assert lines[5].split()[1] == "100/100" and lines[5].split()[-1] == "0:00:00"
    assert "\r" not in out.getvalue()
    assert all(len(line) <= 80 for line in lines)


def test_lines_mode_prints_a_row_every_interval_between_logging_steps() -> None:
    out = io.StringIO()
    clock = FakeClock()
    progress = Progress(
        max_epochs=1, mode="lines", clock=clock, stream=out, log_every=100, min_interval_s=5.0
    )
    progress.start_epoch(0, steps=1000)
    for step in range(1, 31):
        clock.now += 2.0  # a slow CPU: 2 s per step
        progress.advance(images=4, step=step)
    rows = out.getvalue().splitlines()[1:]
    # step 1, then every 3rd step (6 s >= 5 s since the last row): 1, 4, 7, ..., 28
    assert [r.split()[1] for r in rows] == [f"{s}/1000" for s in range(1, 31, 3)]
    assert all(r.split()[6] == "2.0" for r in rows)  # 4 images / 2 s


def test_row_fits_80_columns_with_large_values() -> None:
    m = StepMetrics(
        step=1, epoch=79, loss={"total": 12345.678, "loc": 0.000123, "conf": float("inf")},
        lr=0.123, images_per_sec=23456.7, data_wait_share=1.0, memory_gib=141.2,
    )  # fmt: skip
    line = format_line(m, max_epochs=80, step_in_epoch=3665, steps_in_epoch=3665,
                       eta_seconds=36000 * 9)  # fmt: skip
    assert len(line) <= 80 and len(format_header(("total", "loc", "conf"))) <= 80
    assert line.split() == ["80/80", "3665/3665", "1.2e+04", "1.2e-04", "nan", "1.23e-01",
                            "23456.7", "100%", "141G", "90:00:00"]  # fmt: skip


def test_resumed_epoch_eta_counts_only_steps_run_here() -> None:
    out = io.StringIO()
    clock = FakeClock()
    progress = Progress(max_epochs=10, mode="lines", clock=clock, stream=out)
    progress.start_epoch(0, steps=100, done=60)
    clock.now += 10.0
    progress.log(metrics(70), step_in_epoch=70)  # 10 steps in 10 s, 30 left
    assert out.getvalue().splitlines()[-1].split()[1:2] == ["70/100"]
    assert out.getvalue().splitlines()[-1].split()[-1] == "0:00:30"


def test_bar_mode_draws_a_bar_and_the_line() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80)
    progress = Progress(max_epochs=80, mode="bar", console=console)
    progress.start_epoch(2, steps=129)
    for step in range(1, 130):
        progress.advance(images=8)
        if step == 120:
            progress.log(metrics(step))
    progress.message(":::MLLOG {}")
    progress.end_epoch()
    text = buf.getvalue()
    assert "━" in text  # the bar
    assert "129/129" in text
    assert "5.123" in text  # the row of the last logging step
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text).replace("\r", "\n")
    assert all(len(line) <= 80 for line in plain.splitlines())
    assert ":::MLLOG {}" in text


def test_coco_table_after_evaluation() -> None:
    out = io.StringIO()
    progress = Progress(max_epochs=80, mode="lines", stream=out)
    stats = [0.2333, 0.4, 0.25, 0.06, 0.25, 0.37, 0.22, 0.32, 0.34, 0.1, 0.37, 0.53]
    progress.show_eval(50, stats, seconds=12.34)
    lines = out.getvalue().splitlines()
    assert lines[0] == "COCO evaluation after epoch 50 (12.3 s): mAP 0.2333"
    assert len(lines) == 13
    assert lines[1].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all")
    assert lines[1].endswith("= 0.233")
    assert lines[12].endswith("= 0.530")


def test_other_ranks_and_off_print_nothing() -> None:
    for kwargs in ({"rank": 1, "mode": "lines"}, {"rank": 0, "mode": "off"}):
        out = io.StringIO()
        progress = Progress(max_epochs=1, stream=out, **kwargs)  # type: ignore[arg-type]
        progress.start_epoch(0, 10)
        progress.log(metrics(1))
        progress.show_eval(1, [0.1] * 12)
        progress.close()
        assert out.getvalue() == ""
