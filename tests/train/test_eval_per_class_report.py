"""Per-category results in a run: the metrics.jsonl evaluation record, the best evaluation's plots
in the run folder, wandb's table and images, and which evaluation counts as the best."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ssd_eval import EvalResult
from ssd_eval.groundtruth import load_ground_truth
from ssd_eval.scoring import CocoScorer
from ssd_eval.summary import format_summary
from ssd_eval.synthetic import make_detections, make_ground_truth
from ssd_train.report.config import LoggingConfig, WandbConfig
from ssd_train.report.metrics import read_metrics
from ssd_train.report.reporter import RunReporter
from ssd_train.score_weights import evaluation_report
from ssd_train.validation import EvalHistory, RunEvaluations

from tests.helpers.wandb_offline import isolate_wandb

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scored() -> EvalResult:
    gt = make_ground_truth(30, seed=61, num_categories=6, absent_categories=1)
    gt["categories"][2]["name"] = gt["categories"][3]["name"]  # two classes share a name
    return CocoScorer(load_ground_truth(gt)).score(make_detections(gt, seed=61, per_image=20))


def _reporter(run_dir: Path) -> RunReporter:
    return RunReporter(
        run_dir,
        LoggingConfig(progress="off"),
        rank=0,
        max_epochs=3,
        target_map=0.23,
        settings={},
    )


class _RecordingWandb:
    """Stands in for WandbLogger: records what the reporter hands to wandb."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.tables: list[tuple[str, list[dict[str, Any]], int]] = []
        self.images: list[tuple[str, Path]] = []

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def log_table(self, name: str, records: list[dict[str, Any]], epoch: int) -> None:
        self.tables.append((name, records, epoch))

    def log_image(self, name: str, path: Path) -> None:
        self.images.append((name, Path(path)))

    def finish(self, exit_code: int = 0) -> None:
        pass


def test_eval_record_plots_and_wandb(scored: EvalResult, tmp_path: Path) -> None:
    assert scored.per_class is not None
    reporter = _reporter(tmp_path)
    recorder = _RecordingWandb()
    reporter.wandb = recorder
    reporter.evaluation(scored, epochs_done=2, step=40, best=True)
    reporter.close()

    (record,) = [r for r in read_metrics(tmp_path) if r["kind"] == "eval"]
    names = [c for c in scored.per_class.names]
    assert names[2] == names[3]
    ids = scored.per_class.category_ids.tolist()
    expected_keys = [*names[:2], f"{names[2]}#{ids[2]}", f"{names[3]}#{ids[3]}", *names[4:]]
    assert list(record["per_class_ap"]) == expected_keys
    assert list(record["per_class_ap"].values()) == [r["ap"] for r in scored.per_class.records()]
    assert list(record["per_class_ap"].values())[-1] == -1.0  # the category without boxes
    assert (record["epoch"], record["step"], record["map"]) == (2, 40, scored.map)

    for name in ("pr_curves.png", "confusion_matrix.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
    assert recorder.records[0]["per_class_ap"] == record["per_class_ap"]
    assert recorder.tables == [("per_class", scored.per_class.records(), 2)]
    assert [name for name, _ in recorder.images][:2] == ["pr_curves", "confusion_matrix"]


def test_plots_only_for_the_best_evaluation(scored: EvalResult, tmp_path: Path) -> None:
    reporter = _reporter(tmp_path)
    reporter.evaluation(scored, epochs_done=1, step=20, best=False)
    assert not (tmp_path / "pr_curves.png").exists()
    reporter.evaluation(scored._replace(per_class=None), epochs_done=2, step=40, best=True)
    assert not (tmp_path / "pr_curves.png").exists()  # nothing to draw without per-class results
    reporter.close()
    records = [r for r in read_metrics(tmp_path) if r["kind"] == "eval"]
    assert "per_class_ap" in records[0] and "per_class_ap" not in records[1]


class _Stand:
    """mllog / exporter / evaluation stand-ins for RunEvaluations."""

    def __init__(self, results: list[EvalResult]) -> None:
        self.results = results

    def eval_result(self, *args: Any) -> None:
        pass

    def on_evaluation(self, *args: Any, **kwargs: Any) -> None:
        pass

    def poll(self, *, wait: bool = False) -> list[EvalResult]:
        return self.results


def test_best_evaluation_decides_the_plots(scored: EvalResult, tmp_path: Path) -> None:
    """Evaluations with mAP 0.10, 0.05, 0.20, 0.20 after a resumed best of 0.08: plots are
    written for the first, third and fourth (a tie keeps the newest model's plots)."""
    maps = [0.10, 0.05, 0.20, 0.20]
    results = [scored._replace(map=m, epoch=i + 1) for i, m in enumerate(maps)]
    calls: list[tuple[int, bool]] = []

    class Reporter:
        def evaluation(
            self, result: EvalResult, *, epochs_done: int, step: int, best: bool
        ) -> None:
            calls.append((epochs_done, best))

    history = EvalHistory(best_map=0.08, submitted=len(maps))
    stand = _Stand(results)
    run = RunEvaluations(
        stand,  # type: ignore[arg-type]
        history,
        target_map=0.23,
        mllog=stand,
        reporter=Reporter(),
        exporter=stand,
        class_names=[],
    )
    run.receive(None, wait=True, step=100, epoch=4)  # type: ignore[arg-type]
    assert calls == [(1, True), (2, False), (3, True), (4, True)]


@pytest.mark.slow  # ~6 s: wandb's import and service process
def test_wandb_offline_run_holds_table_and_plots(
    scored: EvalResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    isolate_wandb(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    cfg = LoggingConfig(progress="off", wandb=WandbConfig(enabled=True, mode="offline"))
    try:
        reporter = RunReporter(run_dir, cfg, rank=0, max_epochs=3, target_map=0.23, settings={})
        assert reporter.wandb is not None and reporter.wandb.enabled
        reporter.evaluation(scored, epochs_done=2, step=40, best=True)
        reporter.close()
    finally:
        wandb.teardown()
    data = b"".join(f.read_bytes() for f in (run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert b"eval/per_class" in data and b"eval/per_class_ap/" in data
    assert b"images/pr_curves" in data and b"images/confusion_matrix" in data


def test_eval_mode_prints_the_table_after_the_summary(scored: EvalResult) -> None:
    assert scored.per_class is not None
    lines = evaluation_report("weights w.pt", 30, scored).splitlines()
    assert lines[0] == "COCO box evaluation of weights w.pt on 30 images:"
    assert lines[1:13] == format_summary(scored.stats).splitlines()
    assert lines[13] == "" and lines[14].startswith("category ")
    table = lines[14:]
    assert len(table) == 1 + len(scored.per_class.names)
    assert max(len(line) for line in table) <= 100
    shown = [-1.0 if cell == "-" else float(cell) for cell in (r.split()[-9] for r in table[1:])]
    assert shown[:-1] == sorted(shown[:-1]) and shown[-1] == -1.0  # weakest first, no-gt last
    lines = evaluation_report("w", 30, scored._replace(per_class=None)).splitlines()
    assert len(lines) == 13
