"""The default job's budget (issue 14): mAP >= 0.23 within 800 image-passes.

The budget is stated as work, not wall time (CPUs differ by 4x): every training image seen counts
1, every evaluation image scored counts 1/3, and the evaluation that first reaches the target must
come after at most 800 such passes, counted from the run's own ``metrics.jsonl`` and
``config.json``. The fast tests check the counting rule and that the default settings leave room
for the budget; the slow one runs the default job and counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ssd_data.synthetic.presets import PRESETS
from ssd_train.settings import load_settings

from tests.helpers.cli import run_ssd_train

MAX_IMAGE_PASSES = 800
EVAL_IMAGE_WEIGHT = 1 / 3
TARGET = 0.23


def image_passes_at_target(run_dir: Path) -> tuple[float, list[dict]]:
    """(image-passes up to and including the first evaluation with map >= TARGET, eval records).

    Raises AssertionError when no evaluation reached the target.
    """
    config = json.loads((run_dir / "config.json").read_text())
    batch = config["data"]["batch_size"] * config["optim"]["grad_accumulation_steps"]
    val_images = config["synthetic"]["val_images"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("kind") == "eval"]
    hit = next((i for i, r in enumerate(evals) if r["map"] >= TARGET), None)
    assert hit is not None, f"no evaluation reached {TARGET}: {[r['map'] for r in evals]}"
    step = evals[hit]["step"]
    return step * batch + (hit + 1) * val_images * EVAL_IMAGE_WEIGHT, evals


def test_image_pass_count_golden(tmp_path: Path) -> None:
    """The counting rule on a hand-made run folder: 3 evals, the second reaching the target."""
    cfg = {"data": {"batch_size": 8}, "optim": {"grad_accumulation_steps": 1},
           "synthetic": {"val_images": 30}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    lines = [
        {"kind": "train", "step": 10},
        {"kind": "eval", "epoch": 2, "step": 40, "map": 0.1},
        {"kind": "eval", "epoch": 3, "step": 60, "map": 0.25},
        {"kind": "eval", "epoch": 4, "step": 80, "map": 0.3},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    passes, _ = image_passes_at_target(tmp_path)
    assert passes == pytest.approx(60 * 8 + 2 * 30 / 3)  # 480 trained + 2 evals of 30 = 500


def test_default_job_budget_leaves_room() -> None:
    """The default settings can reach the target inside the budget at all: the first evaluation
    comes before 800 image-passes, and the starter set is the small, 4-class one it was tuned on."""
    s = load_settings([])
    batch = s.data.batch_size * s.optim.grad_accumulation_steps
    first_eval = s.schedule.eval_epochs[0] * s.synthetic.train_images
    assert first_eval + s.synthetic.val_images / 3 < MAX_IMAGE_PASSES
    assert s.synthetic.difficulty == "starter"
    assert len(PRESETS["starter"].category_ids) == 4
    assert len(set(PRESETS["starter"].palette)) == 4  # one colour per class
    assert s.schedule.target_map == TARGET
    assert batch == 8


#: The seed of the slow run (the default job draws one; the budget was measured with several).
SEED = 2


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a hang guard: ~15 min at 1 img/s (2 AVX2 cores, fp32)
def test_default_job_reaches_the_target_within_800_image_passes(tmp_path: Path) -> None:
    """``ssd-train`` with the default settings; only the run folder, the dataset cache, the seed
    and fp32 are pinned (a CPU with bf16 instructions would otherwise train in bf16, which the
    budget was not measured in)."""
    run = tmp_path / "run"
    args = ["--run-dir", str(run), "--synthetic.cache-dir", str(tmp_path / "cache"),
            "--seed", str(SEED), "--precision", "fp32"]  # fmt: skip
    proc = run_ssd_train(*args, timeout=3500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    passes, evals = image_passes_at_target(run)
    assert passes <= MAX_IMAGE_PASSES, (passes, [(r["epoch"], r["map"]) for r in evals])
    assert "target met" in proc.stdout[-400:], proc.stdout[-400:]
