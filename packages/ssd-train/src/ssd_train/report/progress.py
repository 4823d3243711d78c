"""Rank-0 console progress: a fixed-width line per logging step, a bar per epoch, COCO tables.

On a terminal (`mode="bar"`, or "auto" with a TTY) a rich progress bar per epoch is redrawn in
place, its text the fixed-width line of the latest logging step; `:::MLLOG` lines and other
prints appear above it. Elsewhere (`mode="lines"`, or "auto" in a Slurm log) one plain line is
printed per logging step, under a header printed at each epoch start:

        Epoch         Step      loss       loc      conf         lr    img/s  data   mem       ETA
         3/80      120/129     5.123     1.234     3.889   9.00e-02   1234.5   12%  3.2G   0:01:23

ETA is the time left in the epoch at the epoch's mean step rate so far.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Literal, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress

from ssd_train.report.metrics import StepMetrics

ProgressMode = Literal["auto", "bar", "lines", "off"]
DEFAULT_LOSS_NAMES = ("total", "loc", "conf")
_LOSS_TITLES = {"total": "loss"}


def format_eta(seconds: float | None) -> str:
    """'H:MM:SS' ('-:--:--' when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_header(loss_names: Sequence[str]) -> str:
    """Column titles matching `format_line`."""
    losses = "".join(f"{_LOSS_TITLES.get(n, n)[:9]:>10}" for n in loss_names)
    return f"{'Epoch':>9}{'Step':>13}{losses}{'lr':>11}{'img/s':>9}{'data':>6}{'mem':>8}{'ETA':>10}"


def format_line(
    m: StepMetrics,
    *,
    max_epochs: int,
    step_in_epoch: int,
    steps_in_epoch: int,
    eta_seconds: float | None,
    loss_names: Sequence[str] = DEFAULT_LOSS_NAMES,
) -> str:
    """The fixed-width progress line of one logging step (same width as `format_header`).

    Loss terms are shown in `loss_names` order ('-' if absent, 'nan' if not finite).
    """
    losses = "".join(f"{_number(m.loss.get(n)):>10}" for n in loss_names)
    memory = "-" if m.memory_gib is None else f"{m.memory_gib:.3g}G"
    wait = "-" if not math.isfinite(m.data_wait_share) else f"{100 * m.data_wait_share:.0f}%"
    return (
        f"{f'{m.epoch + 1}/{max_epochs}':>9}"
        f"{f'{step_in_epoch}/{steps_in_epoch}':>13}"
        f"{losses}"
        f"{m.lr:>11.2e}"
        f"{m.images_per_sec:>9.1f}"
        f"{wait:>6}"
        f"{memory:>8}"
        f"{format_eta(eta_seconds):>10}"
    )


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else "nan"


def format_coco_table(stats: Sequence[float]) -> str:
    """The 12-line COCO table (ssd_eval's formatter, as pycocotools prints it)."""
    from ssd_eval import format_summary

    return format_summary(stats)


class Progress:
    """Console progress of rank 0 (other ranks print nothing).

    Per epoch: `start_epoch(epoch, steps)` (prints the column header); every step `advance()`
    (cheap, no host sync); on logging steps `log(metrics)`; `end_epoch()`. After an
    evaluation `show_eval(epochs_done, stats)`. `message(text)` prints a line above the bar;
    `close()` at the end. `console` / `stream` replace stdout (tests).
    """

    def __init__(
        self,
        *,
        max_epochs: int,
        rank: int = 0,
        mode: ProgressMode = "auto",
        loss_names: Sequence[str] = DEFAULT_LOSS_NAMES,
        clock: Callable[[], float] = time.monotonic,
        console: Console | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.max_epochs = max_epochs
        self.enabled = rank == 0 and mode != "off"
        self.loss_names = tuple(loss_names)
        self._stream = stream
        if mode == "auto":
            mode = "bar" if self._out().isatty() else "lines"
        self.mode = mode
        self._clock = clock
        self._console = console
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._epoch = 0
        self._steps = 0
        self._done = 0
        self._first_done = 0
        self._epoch_start = 0.0

    def _out(self) -> TextIO:
        return self._stream or sys.stdout

    def _print(self, text: str) -> None:
        if self.mode == "bar":
            console = self._bar.console if self._bar is not None else self._get_console()
            console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            print(text, file=self._out(), flush=True)

    def _get_console(self) -> Console:
        if self._console is None:
            self._console = Console(file=self._out())
        return self._console

    def message(self, text: str) -> None:
        if self.enabled:
            self._print(text)

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None:
        """0-based `epoch` of `steps` steps, `done` of them already run (a resumed epoch)."""
        if not self.enabled:
            return
        self._close_bar()
        self._epoch, self._steps, self._done, self._first_done = epoch, steps, done, done
        self._epoch_start = self._clock()
        self._print(format_header(self.loss_names))
        if self.mode == "bar":
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                console=self._get_console(),
                transient=False,
                refresh_per_second=4,
            )
            self._bar.start()
            first = f"{f'{epoch + 1}/{self.max_epochs}':>9}"
            self._task = self._bar.add_task(first, total=steps, completed=done)

    def advance(self, steps: int = 1) -> None:
        if not self.enabled:
            return
        self._done += steps
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self._done)

    def eta_seconds(self) -> float | None:
        """Seconds left in the epoch at its mean step time so far (None before the first step)."""
        ran = self._done - self._first_done
        if ran <= 0:
            return None
        per_step = (self._clock() - self._epoch_start) / ran
        return per_step * max(self._steps - self._done, 0)

    def log(self, m: StepMetrics, step_in_epoch: int | None = None) -> None:
        """A logging step's values; `step_in_epoch` (steps done in the epoch) sets the count."""
        if not self.enabled:
            return
        if step_in_epoch is not None:
            self.advance(step_in_epoch - self._done)
        line = format_line(
            m,
            max_epochs=self.max_epochs,
            step_in_epoch=self._done,
            steps_in_epoch=self._steps,
            eta_seconds=self.eta_seconds(),
            loss_names=self.loss_names,
        )
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=line)
        else:
            self._print(line)

    def end_epoch(self) -> None:
        self._close_bar()

    def show_eval(
        self, epochs_done: int, stats: Sequence[float], seconds: float | None = None
    ) -> None:
        """The COCO table of the evaluation after `epochs_done` epochs (stats[0] is the mAP)."""
        if not self.enabled:
            return
        took = "" if seconds is None else f" ({seconds:.1f} s)"
        self._print(
            f"COCO evaluation after epoch {epochs_done}{took}: mAP {stats[0]:.4f}\n"
            + format_coco_table(stats)
        )

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None

    def close(self) -> None:
        self._close_bar()
