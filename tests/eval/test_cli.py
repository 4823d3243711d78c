"""`ssd-eval` command line: summary identical to pycocotools' printout, --json, backends, bench."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ssd_eval.cli import main
from ssd_eval.summary import format_summary
from ssd_eval.synthetic import make_detections, make_ground_truth

from tests.helpers.coco_reference import records_from_rows


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, list[dict]]:
    gt = make_ground_truth(40, seed=41, num_categories=6, shuffle_categories=True)
    records = records_from_rows(make_detections(gt, seed=41, per_image=15))
    folder = tmp_path_factory.mktemp("cli")
    (folder / "gt.json").write_text(json.dumps(gt))
    (folder / "dets.json").write_text(json.dumps(records))
    return folder / "gt.json", folder / "dets.json", gt, records


def _pycocotools_printout(gt: dict, records: list[dict]) -> tuple[list[str], list[float]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(records)), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluator.summarize()
    return printed.getvalue().splitlines(), [float(v) for v in evaluator.stats]


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_score_prints_summary_and_writes_json(
    files: tuple[Path, Path, dict, list[dict]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
) -> None:
    gt_path, dets_path, gt, records = files
    expected_lines, expected_stats = _pycocotools_printout(gt, records)
    out = tmp_path / "stats.json"
    argv = [
        "--gt",
        str(gt_path),
        "--detections",
        str(dets_path),
        "--json",
        str(out),
        "--backend",
        backend,
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:12] == expected_lines
    written = json.loads(out.read_text())
    assert set(written) == {"mAP", "stats", "per_class"}  # per_class: test_cli_per_class.py
    np.testing.assert_allclose(written["stats"], expected_stats, rtol=0, atol=1e-9)
    assert written["mAP"] == written["stats"][0]


def test_score_subcommand_spelled_out(
    files: tuple[Path, Path, dict, list[dict]], capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path, dets_path, gt, records = files
    assert main(["score", "--gt", str(gt_path), "--detections", str(dets_path)]) == 0
    assert capsys.readouterr().out.splitlines()[:12] == _pycocotools_printout(gt, records)[0]


def test_empty_detections_print_full_summary(
    files: tuple[Path, Path, dict, list[dict]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path, _, _, _ = files
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = tmp_path / "stats.json"
    assert main(["--gt", str(gt_path), "--detections", str(empty), "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len([line for line in lines[:12] if line.endswith("= 0.000")]) == 12
    assert json.loads(out.read_text())["mAP"] == 0.0


def test_bad_detections_exit_2_with_the_record(
    files: tuple[Path, Path, dict, list[dict]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_path, _, _, records = files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([records[0], {**records[1], "image_id": 424242}]))
    assert main(["--gt", str(gt_path), "--detections", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json: record 1 = " in err and "424242" in err and "not in the ground truth" in err


def test_summary_format_matches_pycocotools(files: tuple[Path, Path, dict, list[dict]]) -> None:
    _, _, gt, records = files
    lines, stats = _pycocotools_printout(gt, records)
    assert format_summary(stats).splitlines() == lines


def test_bench_small_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--images", "30", "--detections-per-image", "20", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "job: 30 images" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in table[0].split("|")]
    ours, ours_per_class, reference = (
        [cell.strip() for cell in line.split("|")] for line in table[1:4]
    )
    assert header[1:8] == [
        "backend",
        "load+index s",
        "evaluate s",
        "accumulate s",
        "per-class s",
        "total s",
        "speed-up",
    ]
    assert "faster-coco-eval" in ours[1] and "pycocotools" in reference[1]
    assert ours_per_class[1].endswith("+ per-class") and float(ours[5]) == 0.0
    for row in (ours, ours_per_class):
        assert row[header.index("mAP")] == reference[header.index("mAP")]
        assert float(row[header.index("max abs diff (12 stats)")]) < 1e-9
        assert sum(float(cell) for cell in row[2:6]) == pytest.approx(float(row[6]), abs=0.03)
    assert "per-class output: wall" in out


def test_module_entry_point_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ssd_eval", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "--detections-per-image" in done.stdout


def test_missing_arguments_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "--gt" in capsys.readouterr().err


def test_without_pycocotools(
    files: tuple[Path, Path, dict, list[dict]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gt_path, dets_path, _, _ = files
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import pycocotools` fail
    argv = ["--gt", str(gt_path), "--detections", str(dets_path), "--backend", "pycocotools"]
    assert main(argv) == 2
    assert "needs pycocotools" in capsys.readouterr().err
    assert main(["bench", "--images", "10", "--detections-per-image", "5"]) == 0
    out = capsys.readouterr().out
    assert "pycocotools is not installed" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "backend" not in line]
    assert len(rows) == 2 and all("faster-coco-eval" in row for row in rows)
