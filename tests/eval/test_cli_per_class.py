"""`ssd-eval` per-category output: the JSON records, the console table (100 columns, sorted), and
the two plots (valid PNGs of the stated size)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from ssd_eval.cli import main
from ssd_eval.groundtruth import load_ground_truth
from ssd_eval.per_class_plots import write_plots
from ssd_eval.per_class_table import format_per_class_table
from ssd_eval.scoring import CocoScorer
from ssd_eval.synthetic import make_detections, make_ground_truth

from tests.helpers.coco_reference import records_from_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYS = [
    "category_id",
    "name",
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar100",
    "gt",
    "detections",
]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    gt = make_ground_truth(
        60, seed=51, num_categories=8, shuffle_categories=True, absent_categories=2
    )
    gt["categories"][0]["name"] = "a category name far too long for the table column"
    folder = tmp_path_factory.mktemp("per-class-cli")
    (folder / "gt.json").write_text(json.dumps(gt))
    rows = make_detections(gt, seed=51, per_image=20)
    (folder / "dets.json").write_text(json.dumps(records_from_rows(rows)))
    return folder / "gt.json", folder / "dets.json", gt


def _table(printed: str) -> list[str]:
    """The lines from the per-category table's header to the end of the table."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("category "))
    return [line for line in lines[start:] if line and not line.startswith("wrote ")]


def test_json_per_class_records_and_table(
    job: tuple[Path, Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path, dets_path, gt = job
    out = tmp_path / "scores.json"
    assert main(["--gt", str(gt_path), "--detections", str(dets_path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    per_class = written["per_class"]
    assert [list(record) for record in per_class] == [KEYS] * len(gt["categories"])
    assert [r["category_id"] for r in per_class] == [c["id"] for c in gt["categories"]]
    assert [r["name"] for r in per_class] == [c["name"] for c in gt["categories"]]
    assert all(isinstance(r["gt"], int) and isinstance(r["detections"], int) for r in per_class)
    no_gt = [r for r in per_class if r["gt"] == 0]
    assert len(no_gt) == 2 and all(r["ap"] == -1 and r["ar100"] == -1 for r in no_gt)
    aps = [r["ap"] for r in per_class if r["ap"] > -1]
    assert np.mean(aps) == pytest.approx(written["mAP"], abs=1e-12)

    # the table comes after the 12 numbers, fits 100 columns, weakest first, no-gt rows last
    lines = printed.splitlines()
    assert lines.index(_table(printed)[0]) > 12
    table = _table(printed)
    assert len(table) == 1 + len(gt["categories"])
    assert max(len(line) for line in table) <= 100
    by_id = {r["category_id"]: r for r in per_class}
    shown = [by_id[int(line[22:29])] for line in table[1:]]
    shown_aps = [r["ap"] for r in shown]
    assert shown_aps[:-2] == sorted(aps) and shown_aps[-2:] == [-1.0, -1.0]
    first = table[1 + [r["category_id"] for r in shown].index(gt["categories"][0]["id"])]
    assert first.startswith("a category name far t~ ")
    row = table[1]  # the weakest class's numbers, as printed
    assert row.split()[-2:] == [str(shown[0]["gt"]), str(shown[0]["detections"])]
    assert float(row.split()[-9]) == pytest.approx(shown[0]["ap"], abs=5e-4)


@pytest.mark.parametrize("sort", ["name", "id", "gt", "ap50"])
def test_sort_flag(
    job: tuple[Path, Path, dict[str, Any]], capsys: pytest.CaptureFixture[str], sort: str
) -> None:
    gt_path, dets_path, gt = job
    assert main(["--gt", str(gt_path), "--detections", str(dets_path), "--sort", sort]) == 0
    table = _table(capsys.readouterr().out)
    ids = [int(line[22:29]) for line in table[1:]]
    result = CocoScorer(load_ground_truth(gt)).score(make_detections(gt, seed=51, per_image=20))
    records = {r["category_id"]: r for r in result.per_class.records()}  # type: ignore[union-attr]
    if sort == "name":
        assert [records[i]["name"].lower() for i in ids] == sorted(
            r["name"].lower() for r in records.values()
        )
    elif sort == "id":
        assert ids == sorted(ids)
    elif sort == "gt":
        assert [records[i]["gt"] for i in ids] == sorted(
            (r["gt"] for r in records.values()), reverse=True
        )
    else:
        values = [records[i]["ap50"] for i in ids if records[i]["ap50"] > -1]
        assert values == sorted(values)


def test_bad_confusion_score_is_a_usage_error(
    job: tuple[Path, Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path, dets_path, _ = job
    with pytest.raises(SystemExit) as exit_info:
        main(["--gt", str(gt_path), "--detections", str(dets_path), "--confusion-score", "2"])
    assert exit_info.value.code == 2 and "--confusion-score" in capsys.readouterr().err


def _check_png(path: Path, width: int, height: int) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert 10_000 < len(data) < 3_000_000
    assert imread(path).shape[:2] == (height, width)


def test_plots_flag_writes_two_pngs(
    job: tuple[Path, Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path, dets_path, _ = job
    folder = tmp_path / "plots" / "new"
    argv = ["--gt", str(gt_path), "--detections", str(dets_path), "--plots", str(folder)]
    assert main([*argv, "--confusion-score", "0.3"]) == 0
    assert f"wrote {folder / 'pr_curves.png'}" in capsys.readouterr().out
    _check_png(folder / "pr_curves.png", 1400, 600)
    _check_png(folder / "confusion_matrix.png", 820, 700)  # 8 classes: the smallest size
    assert sorted(p.name for p in folder.iterdir()) == ["confusion_matrix.png", "pr_curves.png"]


def test_eighty_classes_confusion_matrix_size(tmp_path: Path) -> None:
    gt = make_ground_truth(40, seed=52)
    result = CocoScorer(load_ground_truth(gt)).score(make_detections(gt, seed=52, per_image=20))
    assert result.per_class is not None and result.per_class.confusion is not None
    assert result.per_class.confusion.counts.shape == (81, 81)
    paths = write_plots(result.per_class, tmp_path)
    assert [p.name for p in paths] == ["pr_curves.png", "confusion_matrix.png"]
    _check_png(paths[1], 1920, 1800)  # 80 classes: the largest size
    image = imread(paths[1])
    assert image[..., :3].std() > 0.05  # not a blank picture


def test_plot_folder_that_cannot_be_made_exits_4(
    job: tuple[Path, Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path, dets_path, _ = job
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["--gt", str(gt_path), "--detections", str(dets_path), "--plots", str(blocker / "sub")]
    assert main(argv) == 4
    assert str(blocker / "sub") in capsys.readouterr().err


def test_table_width_with_large_numbers() -> None:
    """Six-digit counts and ids, long names: still <= 100 columns."""
    gt = make_ground_truth(20, seed=53, num_categories=3)
    gt["categories"][1]["name"] = "x" * 80
    result = CocoScorer(load_ground_truth(gt)).score(make_detections(gt, seed=53, per_image=5))
    per_class = result.per_class
    assert per_class is not None
    wide = type(per_class)(
        **{
            **per_class.__dict__,
            "category_ids": per_class.category_ids + 999_000,
            "gt_counts": per_class.gt_counts + 99_999_000,
            "detection_counts": per_class.detection_counts + 999_999_000,
        }
    )
    lines = format_per_class_table(wide).splitlines()
    assert len(lines) == 4 and max(len(line) for line in lines) <= 100
