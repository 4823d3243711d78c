"""Two gloo ranks on CPU: the gathered, scored result equals the single-process one on every
rank; errors on one rank stop all ranks; asynchronous results reach every rank."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from ssd_eval.config import EvalConfig
from ssd_eval.evaluator import CocoEvaluator
from ssd_eval.synthetic import make_detections, make_ground_truth

from tests.helpers import eval_dist_worker as dist_worker
from tests.helpers.coco_reference import file_order_labels, pycocotools_stats, tensor_batches

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def two_rank_reports(
    tmp_path_factory: pytest.TempPathFactory, prelaunched
) -> tuple[dict, list[dict]]:

    out = tmp_path_factory.mktemp("dist")
    gt = make_ground_truth(**dist_worker.GROUND_TRUTH)
    (out / "gt.json").write_text(json.dumps(gt))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = [  # forked from a process that has imported torch already
        prelaunched.launch(
            "tests.helpers.eval_dist_worker",
            [str(rank), "2", str(port), str(out)],
            env=env,
            cwd=REPO,
            stdout=out / f"rank{rank}.log",
        )
        for rank in range(2)
    ]
    try:
        for proc in procs:
            proc.wait(timeout=150)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = [(out / f"rank{rank}.log").read_text() for rank in range(2)]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log
    return gt, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _single_process_stats(gt: dict, image_ids: list[int] | None = None) -> list[float]:
    rows = make_detections(gt, **dist_worker.DETECTIONS)
    evaluator = CocoEvaluator(
        gt, EvalConfig(asynchronous=False), label_to_category_id=file_order_labels(gt)
    )
    batches, records = tensor_batches(gt, rows, batch_size=5, image_ids=image_ids)
    for batch in batches:
        evaluator.add(*batch)
    result = evaluator.evaluate()
    np.testing.assert_allclose(result.stats, pycocotools_stats(gt, records), rtol=0, atol=1e-9)
    return result.stats


def test_two_ranks_equal_single_process(two_rank_reports: tuple[dict, list[dict]]) -> None:
    gt, reports = two_rank_reports
    single = _single_process_stats(gt)
    for report in reports:
        assert report["sync"]["epoch"] == 5
        np.testing.assert_allclose(report["sync"]["stats"], single, rtol=0, atol=1e-12)
        np.testing.assert_allclose(report["one_rank_empty"]["stats"], single, rtol=0, atol=1e-12)
    assert reports[0]["sync"] == reports[1]["sync"]


def test_invalid_detections_on_one_rank_stop_every_rank(
    two_rank_reports: tuple[dict, list[dict]],
) -> None:
    _, reports = two_rank_reports
    assert "rank 1" in reports[1]["bad_label"] and "label=99" in reports[1]["bad_label"]
    assert "rank(s) [1]" in reports[0]["bad_label"]
    for report in reports:
        assert (
            "added more than once" in report["duplicate"] or "rank 0 found" in report["duplicate"]
        )


def test_async_results_reach_every_rank(two_rank_reports: tuple[dict, list[dict]]) -> None:
    gt, reports = two_rank_reports
    single = _single_process_stats(gt)
    for report in reports:
        assert report["async"]["returned"] is None
        (polled,) = report["async"]["polled"]
        assert polled["epoch"] == 9
        np.testing.assert_allclose(polled["stats"], single, rtol=0, atol=1e-12)
