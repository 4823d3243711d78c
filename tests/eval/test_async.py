"""Asynchronous scoring: same result as synchronous, epochs carried, non-blocking poll, errors
reported, and a worker process that always goes away (close, garbage, interpreter exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ssd_eval.async_scoring import AsyncScorer, AsyncScoringError
from ssd_eval.config import EvalConfig
from ssd_eval.evaluator import CocoEvaluator
from ssd_eval.groundtruth import load_ground_truth
from ssd_eval.scoring import CocoScorer
from ssd_eval.synthetic import make_detections, make_ground_truth

from tests.helpers.coco_reference import file_order_labels, tensor_batches


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, np.ndarray]:
    gt = make_ground_truth(60, seed=31, num_categories=10)
    rows = make_detections(gt, seed=31, per_image=25)
    path = tmp_path_factory.mktemp("async") / "gt.json"
    path.write_text(json.dumps(gt))
    return path, gt, rows


def _gone(pid: int) -> bool:
    """True when no process (not even a zombie) has this pid."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("X",)


def _wait_gone(pid: int, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_async_equals_sync_in_order_with_epochs_and_errors(
    job: tuple[Path, dict, np.ndarray],
) -> None:
    path, _, rows = job
    sync = CocoScorer(load_ground_truth(path)).score(rows)
    half = rows[rows[:, 0] < np.median(rows[:, 0])]
    sync_half = CocoScorer(load_ground_truth(path)).score(half)
    assert sync.stats != sync_half.stats
    bad = rows.copy()
    bad[3, 6] = 12345  # unknown category id
    with AsyncScorer(path, max_pending=1) as scorer:
        scorer.submit(40, rows)
        start = time.perf_counter()
        early = scorer.poll()  # the worker is still starting: nothing yet, and no waiting
        assert time.perf_counter() - start < 0.5
        assert early == [] and scorer.pending == 1
        scorer.submit(50, bad)  # max_pending=1: waits for epoch 40 to finish first
        assert scorer._pending[0][1].done()
        scorer.submit(55, half)
        assert scorer._pending[1][1].done() and scorer.pending == 3
        first = scorer.wait()  # stops before the failed job, returning what finished before it
        with pytest.raises(AsyncScoringError, match=r"epoch 50.*record 3.*12345"):
            scorer.wait()
        deadline = time.monotonic() + 60
        last: list = []
        while not last and time.monotonic() < deadline:  # poll until the last one is done
            last = scorer.poll()
            time.sleep(0.02)
        assert scorer.poll() == [] and scorer.pending == 0
    assert [r.epoch for r in first] == [40] and [r.epoch for r in last] == [55]
    assert first[0].stats == sync.stats and first[0].map == sync.map
    assert last[0].stats == sync_half.stats


def test_close_stops_the_worker_without_a_zombie(job: tuple[Path, dict, np.ndarray]) -> None:
    path, _, rows = job
    scorer = AsyncScorer(path)
    pid = scorer.worker_pid()
    assert pid != os.getpid() and not _gone(pid)
    scorer.submit(3, rows)
    scorer.close()
    assert _wait_gone(pid)
    with pytest.raises(RuntimeError, match="closed"):
        scorer.submit(4, rows)


def test_interpreter_exit_without_close_does_not_hang(
    job: tuple[Path, dict, np.ndarray], tmp_path: Path
) -> None:
    path, _, rows = job
    np.save(tmp_path / "rows.npy", rows)
    script = textwrap.dedent(
        f"""
        import numpy as np
        from ssd_eval.async_scoring import AsyncScorer
        scorer = AsyncScorer({str(path)!r})
        print(scorer.worker_pid(), flush=True)
        scorer.submit(7, np.load({str(tmp_path / "rows.npy")!r}))
        # exit with a job in flight and without close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert _wait_gone(int(done.stdout.split()[0]))


def test_evaluator_async_equals_sync(job: tuple[Path, dict, np.ndarray]) -> None:
    path, gt, rows = job
    batches, _ = tensor_batches(gt, rows, batch_size=16)
    with CocoEvaluator(
        path, EvalConfig(asynchronous=True), label_to_category_id=file_order_labels(gt)
    ) as evaluator:
        assert evaluator.poll() == []  # nothing submitted yet
        for batch in batches:
            evaluator.add(*batch)
        assert evaluator.evaluate(epoch=60) is None
        assert evaluator.pending == 1
        (result,) = evaluator.poll(wait=True)
        for batch in batches:
            evaluator.add(*batch)
        sync = evaluator.evaluate(epoch=60, asynchronous=False)
    assert result == sync and result.epoch == 60
