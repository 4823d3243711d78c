"""Rank-0 console progress: a row of at most 80 columns that updates every step, COCO tables.

The row holds the epoch, the step in it, the losses (refreshed on logging steps; '-' before the
first), the LR, img/s and the data-wait share (host clocks, every step, no device sync), memory and
the epoch's ETA. On a terminal (`mode="bar"`, or "auto" with a TTY) the row and a progress bar under
it are redrawn in place at every step; other prints appear above them. Elsewhere (`mode="lines"`,
or "auto" in a Slurm log) the row is printed at the first step of each epoch, on every logging step
and otherwise at most every `min_interval_s` seconds, under a header printed at each epoch start:

 Epoch       Step    loss     loc    conf       lr   img/s data    mem      ETA
  3/80    120/129   5.123   1.234   3.889 9.00e-02  1234.5  12%  3.21G  0:01:23

ETA is the time left in the epoch at the epoch's mean step rate so far; img/s and data are the
rates over the last `RATE_WINDOW` steps.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal, TextIO

from rich.console import Console, RenderableType
from rich.progress import Progress as RichProgress
from rich.progress import ProgressColumn, Task, TaskID
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ssd_train.report.metrics import StepMetrics

ProgressMode = Literal["auto", "bar", "lines", "off"]
DEFAULT_LOSS_NAMES = ("total", "loc", "conf")
_LOSS_TITLES = {"total": "loss"}
#: Steps over which the live img/s and data-wait share are measured.
RATE_WINDOW = 20
#: Column widths of the row (sum 79: the row fits an 80-column terminal).
_W_EPOCH, _W_STEP, _W_LOSS, _W_LR, _W_SPEED, _W_DATA, _W_MEM, _W_ETA = 6, 11, 8, 9, 8, 5, 7, 9


def format_eta(seconds: float | None) -> str:
    """'H:MM:SS' ('-:--:--' when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_header(loss_names: Sequence[str]) -> str:
    """Column titles matching `format_line` (at most 79 characters with three loss terms)."""
    losses = "".join(f"{_LOSS_TITLES.get(n, n)[: _W_LOSS - 1]:>{_W_LOSS}}" for n in loss_names)
    return (
        f"{'Epoch':>{_W_EPOCH}}{'Step':>{_W_STEP}}{losses}{'lr':>{_W_LR}}"
        f"{'img/s':>{_W_SPEED}}{'data':>{_W_DATA}}{'mem':>{_W_MEM}}{'ETA':>{_W_ETA}}"
    )


def format_line(
    m: StepMetrics,
    *,
    max_epochs: int,
    step_in_epoch: int,
    steps_in_epoch: int,
    eta_seconds: float | None,
    loss_names: Sequence[str] = DEFAULT_LOSS_NAMES,
) -> str:
    """The fixed-width progress row (same width as `format_header`).

    Loss terms are shown in `loss_names` order ('-' if absent, 'nan' if not finite); a non-finite
    or missing lr, img/s or data share shows as '-'.
    """
    losses = "".join(f"{_number(m.loss.get(n)):>{_W_LOSS}}" for n in loss_names)
    memory = "-" if m.memory_gib is None else f"{m.memory_gib:.3g}G"
    wait = "-" if not math.isfinite(m.data_wait_share) else f"{100 * m.data_wait_share:.0f}%"
    lr = f"{m.lr:.2e}" if math.isfinite(m.lr) else "-"
    speed = f"{m.images_per_sec:.1f}" if math.isfinite(m.images_per_sec) else "-"
    return (
        f"{f'{m.epoch + 1}/{max_epochs}':>{_W_EPOCH}}"
        f"{f'{step_in_epoch}/{steps_in_epoch}':>{_W_STEP}}"
        f"{losses}"
        f"{lr:>{_W_LR}}"
        f"{speed:>{_W_SPEED}}"
        f"{wait:>{_W_DATA}}"
        f"{memory:>{_W_MEM}}"
        f"{format_eta(eta_seconds):>{_W_ETA}}"
    )


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "nan"
    text = f"{value:.4g}"
    return text if len(text) < _W_LOSS else f"{value:.1e}"


class _RowColumn(ProgressColumn):
    """Renders the 'row' task as its text and the 'bar' task as a bar with 'done/total'."""

    def render(self, task: Task) -> RenderableType:
        if task.fields.get("kind") != "bar":
            return Text(task.description, no_wrap=True, overflow="ellipsis")
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            ProgressBar(total=task.total, completed=task.completed, width=40),
            Text(f"{int(task.completed)}/{int(task.total or 0)}"),
        )
        return grid


def format_coco_table(stats: Sequence[float]) -> str:
    """The 12-line COCO table (ssd_eval's formatter, as pycocotools prints it)."""
    from ssd_eval import format_summary

    return format_summary(stats)


class Progress:
    """Console progress of rank 0 (other ranks print nothing).

    Per epoch: `start_epoch(epoch, steps)` (prints the column header); every step
    `advance(images=, data_wait_s=, step=)` (host clocks only, no device sync; redraws the row);
    on logging steps `log(metrics)` (refreshes losses, LR and memory); `end_epoch()`. After an
    evaluation `show_eval(epochs_done, stats)`. `message(text)` prints a line above the bar;
    `close()` at the end. `console` / `stream` replace stdout (tests). `log_every`: in lines mode
    `advance` leaves the row of a step with `step % log_every == 0` to `log`.
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
        log_every: int | None = None,
        min_interval_s: float = 5.0,
    ) -> None:
        self.max_epochs = max_epochs
        self.enabled = rank == 0 and mode != "off"
        self.loss_names = tuple(loss_names)
        self._stream = stream
        if mode == "auto":
            mode = "bar" if self._out().isatty() else "lines"
        self.mode = mode
        self.log_every = log_every
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._console = console
        self._bar: RichProgress | None = None
        self._row_task: TaskID | None = None
        self._bar_task: TaskID | None = None
        self._epoch = 0
        self._steps = 0
        self._done = 0
        self._first_done = 0
        self._epoch_start = 0.0
        self._last_print = -math.inf
        self._last: StepMetrics | None = None
        self._marks: deque[tuple[float, int, float]] = deque(maxlen=RATE_WINDOW + 1)

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
        self._marks.clear()
        self._marks.append((self._epoch_start, 0, 0.0))
        self._print(format_header(self.loss_names))
        if self.mode == "bar":
            self._bar = RichProgress(
                _RowColumn(),
                console=self._get_console(),
                transient=False,
                refresh_per_second=4,
            )
            self._bar.start()
            self._row_task = self._bar.add_task(self._row(), total=None, kind="row")
            self._bar_task = self._bar.add_task("", total=steps, completed=done, kind="bar")

    def rates(self) -> tuple[float, float]:
        """(img/s, data-wait share) over the last `RATE_WINDOW` steps (nan before a step)."""
        if len(self._marks) < 2:
            return math.nan, math.nan
        (t0, _, _), (t1, _, _) = self._marks[0], self._marks[-1]
        images = sum(m[1] for m in list(self._marks)[1:])
        wait = sum(m[2] for m in list(self._marks)[1:])
        if t1 <= t0 or images == 0:
            return math.nan, math.nan
        return images / (t1 - t0), min(wait / (t1 - t0), 1.0)

    def _row(self) -> str:
        speed, wait = self.rates()
        last = self._last
        m = StepMetrics(
            step=0,
            epoch=self._epoch,
            loss=dict(last.loss) if last is not None else {},
            lr=last.lr if last is not None else math.nan,
            images_per_sec=speed,
            data_wait_share=wait,
            memory_gib=last.memory_gib if last is not None else None,
        )
        return format_line(
            m,
            max_epochs=self.max_epochs,
            step_in_epoch=self._done,
            steps_in_epoch=self._steps,
            eta_seconds=self.eta_seconds(),
            loss_names=self.loss_names,
        )

    def advance(
        self, steps: int = 1, *, images: int = 0, data_wait_s: float = 0.0, step: int | None = None
    ) -> None:
        """`steps` steps done (of `images` images, `data_wait_s` s waiting for data); redraws the row.

        `step`: the global step count, so that lines mode leaves logging steps to `log`.
        """
        if not self.enabled:
            return
        first = self._done == self._first_done
        self._done += steps
        now = self._clock()
        if images:
            self._marks.append((now, images, data_wait_s))
        if self._bar is not None:
            self._update_bar()
            return
        if self.mode != "lines":
            return
        logging_step = self._done >= self._steps or (
            step is not None and self.log_every is not None and step % self.log_every == 0
        )
        if not logging_step and (first or now - self._last_print >= self.min_interval_s):
            self._print(self._row())
            self._last_print = now

    def _update_bar(self) -> None:
        if self._bar is not None and self._row_task is not None and self._bar_task is not None:
            self._bar.update(self._row_task, description=self._row())
            self._bar.update(self._bar_task, completed=self._done)

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
        if step_in_epoch is not None and step_in_epoch != self._done:
            self._done = step_in_epoch
        self._last = m
        if self._bar is not None:
            self._update_bar()
            return
        line = format_line(
            m,
            max_epochs=self.max_epochs,
            step_in_epoch=self._done,
            steps_in_epoch=self._steps,
            eta_seconds=self.eta_seconds(),
            loss_names=self.loss_names,
        )
        self._print(line)
        self._last_print = self._clock()

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
            self._update_bar()
            self._bar.stop()
            self._bar = None
            self._row_task = self._bar_task = None

    def close(self) -> None:
        self._close_bar()
