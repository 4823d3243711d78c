"""Run-level start-up decisions: the run's seed survives a restart; cache_clear tells the truth."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ssd_train.distributed import DistributedContext
from ssd_train.run_setup import caches_cleared, resolve_seed

CTX = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_drawn_seed_is_recorded_and_reused_by_a_restarted_segment(tmp_path: Path) -> None:
    first = resolve_seed(None, tmp_path, CTX)
    assert (tmp_path / "seed").read_text().strip() == str(first)
    # a restarted segment on the same run folder (no --seed) gets the same seed back ...
    assert resolve_seed(None, tmp_path, CTX) == first
    # ... while a new run folder draws afresh (2**31 values: a collision here is negligible)
    draws = set()
    for i in range(3):
        folder = tmp_path / f"new-run-{i}"
        folder.mkdir()
        draws.add(resolve_seed(None, folder, CTX))
    assert len(draws) > 1


def test_explicit_seed_wins_and_is_recorded(tmp_path: Path) -> None:
    resolve_seed(None, tmp_path, CTX)
    assert resolve_seed(1234, tmp_path, CTX) == 1234
    assert resolve_seed(None, tmp_path, CTX) == 1234


def test_corrupt_seed_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "seed").write_text("not a number\n")
    with pytest.raises(ValueError, match=r"seed.*'not a number'.*--seed"):
        resolve_seed(None, tmp_path, CTX)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("true", True), ("1", True), ("false", False), ("0", False), ("TRUE", True)],
)
def test_cache_clear_follows_the_launcher(monkeypatch, value: str | None, expected: bool) -> None:
    if value is None:
        monkeypatch.delenv("MLPERF_CACHE_CLEARED", raising=False)
    else:
        monkeypatch.setenv("MLPERF_CACHE_CLEARED", value)
    assert caches_cleared() is expected
