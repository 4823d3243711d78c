"""`pr_curves.png` and `confusion_matrix.png` from a PerClassResult (matplotlib, Agg canvas).

- pr_curves.png (1400x600 px): interpolated precision against recall, at IoU 0.50 (left) and
  averaged over IoU 0.50:0.95 (right), 100 detections, all areas; one faint line per category with
  ground truth, and their mean in bold (the mean's area is AP50 and AP).
- confusion_matrix.png (700 to 1800 px high, 120 px wider for the colour bar): rows the true class, columns the predicted class,
  background last; each row normalised to sum 1 (where the ground-truth boxes of a class went;
  the background row: which classes the unmatched detections claimed). Values are written in the
  cells when there are at most 30 classes.

Drawn with matplotlib's object API (no pyplot state), safe in any process or thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ssd_eval.confusion import ConfusionMatrix
from ssd_eval.per_class import PerClassResult

PR_CURVES_FILE = "pr_curves.png"
CONFUSION_FILE = "confusion_matrix.png"
DPI = 100
_ANNOTATE_UP_TO = 30


def pr_curves_figure(per_class: PerClassResult) -> Figure:
    """Two panels (IoU 0.50; mean over 0.50:0.95), one faint line per category and the mean."""
    fig = Figure(figsize=(14.0, 6.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    recall = per_class.recall_thresholds
    panels = (
        (per_class.precision50, "IoU 0.50", "AP50"),
        (per_class.precision_mean, "IoU 0.50:0.95 (mean over 10 thresholds)", "AP"),
    )
    for ax, (curves, title, what) in zip(fig.subplots(1, 2).flat, panels, strict=True):
        valid = curves[(curves > -1).all(axis=1)]
        for curve in valid:
            ax.plot(recall, curve, color="tab:blue", alpha=0.25, linewidth=0.8)
        if valid.shape[0]:
            mean = valid.mean(axis=0)
            label = f"mean of {valid.shape[0]} classes ({what} {mean.mean():.3f})"
            ax.plot(recall, mean, color="black", linewidth=2.5, label=label)
            ax.legend(loc="upper right")
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=f"precision-recall, {title}", xlabel="recall", ylabel="precision")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
    return fig


def confusion_figure(confusion: ConfusionMatrix) -> Figure:
    """The row-normalised matrix as an image, class names on both axes, a colour bar."""
    k = len(confusion.names)
    side = float(np.clip(2.0 + 0.2 * (k + 1), 7.0, 18.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    values = confusion.normalized()
    shown = np.ma.masked_where(values == 0, values)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.6, label="share of the row")
    labels = [*confusion.names, "background"]
    font = float(np.clip(400.0 / (k + 1), 5.0, 10.0))
    ax.set_xticks(np.arange(k + 1), labels, rotation=90, fontsize=font)
    ax.set_yticks(np.arange(k + 1), labels, fontsize=font)
    ax.set_xticks(np.arange(k + 2) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 2) - 0.5, minor=True)
    ax.grid(which="minor", color="0.9", linewidth=0.3)
    ax.tick_params(which="minor", length=0)
    if k <= _ANNOTATE_UP_TO:
        for (row, col), value in np.ndenumerate(values):
            if value > 0:
                color = "white" if value > 0.6 else "black"
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=font,
                        color=color)  # fmt: skip
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"confusion matrix (IoU >= {confusion.iou_threshold:g}, "
        f"score >= {confusion.score_threshold:g}; rows sum to 1)",
    )
    return fig


def _save(fig: Figure, path: Path) -> Path:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(path)  # a reader never sees a half-written file
    return path


def write_plots(per_class: PerClassResult, folder: Path | str) -> list[Path]:
    """Write pr_curves.png and (when computed) confusion_matrix.png into ``folder`` (made if
    needed); returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [_save(pr_curves_figure(per_class), folder / PR_CURVES_FILE)]
    if per_class.confusion is not None:
        paths.append(_save(confusion_figure(per_class.confusion), folder / CONFUSION_FILE))
    return paths
