"""`results.png`: losses, learning rate, throughput and mAP over the run, from metrics.jsonl.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display needed), so it
is safe in a training process and in threads. A resumed run may log some steps twice (the steps
after its last checkpoint); the later record of a step or evaluation epoch wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ssd_train.report.metrics import read_metrics

RESULTS_FILE = "results.png"
FIGURE_SIZE_INCHES = (12.0, 8.0)
DPI = 100


def _latest(records: Iterable[dict[str, Any]], kind: str, key: str) -> list[dict[str, Any]]:
    """Records of `kind`, one per `key` value (the last written), sorted by it."""
    chosen: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("kind") == kind and record.get(key) is not None:
            chosen[int(record[key])] = record
    return [chosen[k] for k in sorted(chosen)]


def _readable(
    ax: Axes, xs: Sequence[float], ys: Sequence[float | None], *, y_from_zero: bool = False
) -> None:
    """Integer x ticks; a single x value gets an x range of +-1 around it (not matplotlib's
    +-4%: 0.96..1.04), a single y value a range from 0 (or y_from_zero: always from 0)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(set(xs)) == 1:
        ax.set_xlim(max(0.0, xs[0] - 1.0) if xs[0] >= 0 else xs[0] - 1.0, xs[0] + 1.0)
    finite = [y for y in ys if y is not None]
    if finite and (y_from_zero or len(set(finite)) == 1):
        top = max(finite)
        if top > 0:
            ax.set_ylim(0.0, top * 1.25)


def results_figure(records: list[dict[str, Any]], target_map: float | None = None) -> Figure:
    """A 2x2 figure: loss terms, learning rate, img/s (x: step) and mAP (x: epochs done)."""
    train = _latest(records, "train", "step")
    evals = _latest(records, "eval", "epoch")
    fig = Figure(figsize=FIGURE_SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_speed, ax_map = fig.subplots(2, 2).flat
    steps = [r["step"] for r in train]

    names: list[str] = []
    for r in train:
        names += [n for n in r.get("loss", {}) if n not in names]
    for name in names:
        points = [(s, r["loss"].get(name)) for s, r in zip(steps, train, strict=True)]
        points = [(s, v) for s, v in points if v is not None]
        ax_loss.plot([s for s, _ in points], [v for _, v in points], label=name)
    ax_loss.set(title="loss", xlabel="step")
    _readable(ax_loss, steps, [v for r in train for v in r.get("loss", {}).values()])
    if names:
        ax_loss.legend()

    ax_lr.plot(steps, [r.get("lr") for r in train], label="lr")
    ax_lr.set(title="learning rate", xlabel="step")
    _readable(ax_lr, steps, [r.get("lr") for r in train])

    speed = [(s, r.get("images_per_sec")) for s, r in zip(steps, train, strict=True)]
    speed = [(s, v) for s, v in speed if v is not None]
    ax_speed.plot([s for s, _ in speed], [v for _, v in speed], label="img/s")
    ax_speed.set(title="throughput (img/s)", xlabel="step")
    _readable(ax_speed, [s for s, _ in speed], [v for _, v in speed], y_from_zero=True)

    ax_map.plot([r["epoch"] for r in evals], [r.get("map") for r in evals], "o-", label="mAP")
    if target_map is not None:
        ax_map.axhline(target_map, color="grey", linestyle="--", label=f"target {target_map}")
    if not evals:
        ax_map.text(0.5, 0.5, "no evaluation yet", ha="center", va="center",
                    transform=ax_map.transAxes)  # fmt: skip
    ax_map.set(title="box mAP @[.50:.95]", xlabel="epochs done")
    maps = [r.get("map") for r in evals]
    _readable(ax_map, [r["epoch"] for r in evals], [*maps, target_map], y_from_zero=True)
    ax_map.legend()
    return fig


def plot_results(run_dir: Path | str, target_map: float | None = 0.23) -> Path:
    """Write `<run_dir>/results.png` (1200x800 pixels) from `<run_dir>/metrics.jsonl`."""
    run_dir = Path(run_dir)
    fig = results_figure(read_metrics(run_dir), target_map)
    out = run_dir / RESULTS_FILE
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(out)  # a reader never sees a half-written file
    return out
