"""results.png from metrics.jsonl: the plotted data, resumed-run duplicates, the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from PIL import Image
from ssd_train.report.metrics import EvalMetrics, MetricsWriter, StepMetrics, read_metrics
from ssd_train.report.plots import plot_results, results_figure


def write_run(run_dir: Path) -> None:
    with MetricsWriter(run_dir) as writer:
        for step in range(10, 110, 10):
            writer.log_step(StepMetrics(
                step=step, epoch=step // 50, loss={"total": 10 / step, "loc": 2 / step, "conf": 8 / step},
                lr=0.001 * step, images_per_sec=100.0 + step, data_wait_share=0.1,
            ))  # fmt: skip
            if step % 50 == 0:
                writer.log_eval(
                    EvalMetrics(epoch=step // 50, map=step / 500, stats=[step / 500] * 12)
                )
    # a resumed segment re-runs steps 60..100 (checkpoint at 50) with other values
    with MetricsWriter(run_dir) as writer:
        for step in range(60, 110, 10):
            writer.log_step(StepMetrics(
                step=step, epoch=step // 50, loss={"total": 1.0, "loc": 0.5, "conf": 0.5},
                lr=0.5, images_per_sec=7.0, data_wait_share=0.2,
            ))  # fmt: skip
        writer.log_eval(EvalMetrics(epoch=2, map=0.3, stats=[0.3] * 12))


def lines_by_label(ax: Axes) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}


def test_figure_data(tmp_path: Path) -> None:
    write_run(tmp_path)
    fig = results_figure(read_metrics(tmp_path), target_map=0.23)
    ax_loss, ax_lr, ax_speed, ax_map = fig.axes
    steps = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    loss = lines_by_label(ax_loss)
    assert set(loss) == {"total", "loc", "conf"}
    assert loss["total"][0] == steps
    # first segment's values up to step 50, the resumed segment's afterwards
    assert loss["total"][1] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2, 1, 1, 1, 1, 1])
    assert lines_by_label(ax_lr)["lr"][1] == pytest.approx(
        [0.01, 0.02, 0.03, 0.04, 0.05] + [0.5] * 5
    )
    assert lines_by_label(ax_speed)["img/s"][1] == pytest.approx(
        [110, 120, 130, 140, 150] + [7] * 5
    )
    maps = lines_by_label(ax_map)
    assert maps["mAP"] == ([1, 2], pytest.approx([0.1, 0.3]))
    assert maps["target 0.23"][1] == [0.23, 0.23]


def test_results_png_written(tmp_path: Path) -> None:
    write_run(tmp_path)
    out = plot_results(tmp_path)
    assert out == tmp_path / "results.png"
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (800, 1200, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # not a blank canvas
    assert not (tmp_path / "results.tmp.png").exists()


def test_no_evaluation_and_non_finite_loss(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as writer:
        writer.log_step(StepMetrics(step=1, epoch=0, loss={"total": math.nan}, lr=0.0,
                                    images_per_sec=1.0, data_wait_share=0.0))  # fmt: skip
        writer.log_step(StepMetrics(step=2, epoch=0, loss={"total": 3.0}, lr=0.1,
                                    images_per_sec=1.0, data_wait_share=0.0))  # fmt: skip
    fig = results_figure(read_metrics(tmp_path))
    assert lines_by_label(fig.axes[0])["total"] == ([2], [3.0])
    assert any(t.get_text() == "no evaluation yet" for t in fig.axes[3].texts)
    assert plot_results(tmp_path).is_file()


def test_missing_metrics_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        plot_results(tmp_path)


def test_one_point_panels_are_readable(tmp_path: Path) -> None:
    """One logging step and one evaluation: axes around the point, not matplotlib's +-4%."""
    with MetricsWriter(tmp_path) as writer:
        writer.log_step(StepMetrics(
            step=1, epoch=0, loss={"total": 20.0, "loc": 3.0, "conf": 17.0}, lr=0.01,
            images_per_sec=3.5, data_wait_share=0.0,
        ))  # fmt: skip
        writer.log_eval(EvalMetrics(epoch=1, map=0.05, stats=[0.05] * 12))
    fig = results_figure(read_metrics(tmp_path), target_map=0.23)
    ax_loss, ax_lr, ax_speed, ax_map = fig.axes
    for ax in (ax_loss, ax_lr, ax_speed):
        left, right = ax.get_xlim()
        assert (left, right) == (0.0, 2.0)  # step 1 with one step either side (not 0.96..1.04)
    assert ax_map.get_xlim() == (0.0, 2.0)
    bottom, top = ax_map.get_ylim()
    assert bottom == 0.0 and top >= 0.23  # mAP from 0, the target line visible
    assert ax_speed.get_ylim()[0] == 0.0 and ax_speed.get_ylim()[1] > 3.5
    assert ax_lr.get_ylim()[0] == 0.0 and ax_lr.get_ylim()[1] > 0.01
