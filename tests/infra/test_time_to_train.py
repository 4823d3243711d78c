"""infra/time_to_train.py: the projection on a hand-computed example, the epoch model, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.infra import load_script

ttt = load_script("time_to_train.py")


def test_hand_computed_projection_for_dgxa100(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"img_per_s": 1000.0, "batch_size": 114, "world_size": 1}))
    assert ttt.main([str(bench), "--preset", "dgxa100"]) == 0
    out = capsys.readouterr().out
    # By hand: 8 ranks x 1000 img/s = 8,000 img/s; global batch 912 <= 1024 -> 50 epochs, the
    # evaluations at 40 and 50 (2). Training 50 x 117,266 / 8,000 = 732.9125 s; evaluation
    # 2 x (4,952 / (3 x 8,000) + 1 s) + 10 s = 12.41267 s; start-up 60 s.
    # Total 805.32517 s = 13.4221 min.
    # Rate for NVIDIA's 10.215 min: (50 x 117,266 + 2 x 4,952 / 3) images of work in
    # 612.9 - 60 - 2 x 1 - 10 = 540.9 s -> 10,845.99 img/s, / 8 ranks = 1,355.7 per rank.
    assert (
        "| dgxa100 | 8 x 114 (912) | 8,000 | 50 (50.0) | 2 | 12.22 | 0.21 | 1.00 | **13.42** "
        "| 10.215 | 1,356 |" in out
    )
    p = ttt.project(ttt.load_preset("dgxa100"), 1000.0, 1)
    assert p.total_minutes == pytest.approx(805.325167 / 60, rel=1e-6)
    assert p.rate_per_rank_for(10.215) == pytest.approx(5866601.333 / 540.9 / 8, rel=1e-6)


def test_epoch_model() -> None:
    means = {1024: 50.0, 2048: 65.0, 4096: 87.0}
    assert ttt.expected_epochs(512, means) == 50.0
    assert ttt.expected_epochs(1536, means) == pytest.approx(57.5)
    assert ttt.expected_epochs(3072, means) == pytest.approx(76.0)
    with pytest.raises(ttt.ProjectionError, match="above the largest SSD RCP"):
        ttt.expected_epochs(8192, means)
    # NVIDIA's 4x16x24 (global 1536) stopped at the evaluation at epoch 60, as projected.
    preset = ttt.load_preset("dgx2_multi_4x16x24")
    assert (preset.ranks, preset.global_batch) == (64, 1536)
    assert ttt.project(preset, 500.0, 1).epochs == 60


def test_bad_benchmark_json_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"img_per_s": 10.0, "batch_size": 8}))
    assert ttt.main([str(bench), "--preset", "dgxa100"]) == 2
    assert "needs a positive number 'world_size'" in capsys.readouterr().err
    bench.write_text(json.dumps({"img_per_s": 10.0, "batch_size": 8, "world_size": 1}))
    assert ttt.main([str(bench), "--preset", "nope"]) == 2
    assert "no preset" in capsys.readouterr().err
