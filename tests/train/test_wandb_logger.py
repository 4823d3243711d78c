"""wandb: mode selection, a run id kept in the run folder, an offline run written into it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ssd_train.report.config import WandbConfig
from ssd_train.report.wandb_logger import (
    WandbLogger,
    flatten_record,
    has_wandb_credentials,
    resolve_wandb_mode,
    stable_run_id,
)

from tests.helpers.wandb_offline import isolate_wandb

ON = WandbConfig(enabled=True)


def test_mode_selection(tmp_path: Path) -> None:
    no_netrc = {"NETRC": str(tmp_path / "none")}
    assert resolve_wandb_mode(WandbConfig(enabled=False), {"WANDB_API_KEY": "k"}) == "disabled"
    assert resolve_wandb_mode(ON, no_netrc) == "offline"  # no key: offline
    assert resolve_wandb_mode(ON, {**no_netrc, "WANDB_API_KEY": "x" * 40}) == "online"
    assert resolve_wandb_mode(ON, {**no_netrc, "WANDB_MODE": "dryrun"}) == "offline"
    assert (
        resolve_wandb_mode(WandbConfig(enabled=True, mode="offline"), {"WANDB_API_KEY": "k"})
        == "offline"
    )
    # the test suite's WANDB_MODE=disabled beats everything, even an explicit online
    assert (
        resolve_wandb_mode(WandbConfig(enabled=True, mode="online"), {"WANDB_MODE": "disabled"})
        == "disabled"
    )


def test_credentials_from_netrc(tmp_path: Path) -> None:
    rc = tmp_path / "netrc"
    rc.write_text("machine api.wandb.ai\n  login user\n  password " + "a" * 40 + "\n")
    rc.chmod(0o600)
    assert has_wandb_credentials({"NETRC": str(rc)})
    assert resolve_wandb_mode(ON, {"NETRC": str(rc)}) == "online"
    # a key for another server does not count for the default host
    assert not has_wandb_credentials(
        {"NETRC": str(rc), "WANDB_BASE_URL": "https://wandb.example.com"}
    )
    assert not has_wandb_credentials({"NETRC": str(tmp_path / "missing")})


def test_run_id_is_stable(tmp_path: Path) -> None:
    first = stable_run_id(tmp_path)
    assert stable_run_id(tmp_path) == first
    assert (tmp_path / "wandb" / "run-id.txt").read_text().strip() == first
    assert stable_run_id(tmp_path / "other") != first
    (tmp_path / "wandb" / "run-id.txt").write_text("Not An Id!\n")
    with pytest.raises(ValueError, match=r"run-id\.txt"):
        stable_run_id(tmp_path)


def test_flatten_record() -> None:
    train = {"kind": "train", "step": 20, "epoch": 1, "loss": {"total": 4.0, "loc": None},
             "lr": 0.1, "memory_gib": None}  # fmt: skip
    assert flatten_record(train) == {
        "train/step": 20, "train/epoch": 1, "train/loss/total": 4.0, "train/lr": 0.1
    }  # fmt: skip
    ev = {"kind": "eval", "epoch": 5, "map": 0.25, "stats": [0.25, 0.5] + [0.0] * 10}
    flat = flatten_record(ev)
    assert (flat["eval/epoch"], flat["eval/map"], flat["eval/stats/AP50"]) == (5, 0.25, 0.5)
    assert flat["eval/stats/ARl"] == 0.0


def test_disabled_does_nothing(tmp_path: Path) -> None:
    logger = WandbLogger(WandbConfig(enabled=False), run_dir=tmp_path)
    logger.log({"kind": "train", "step": 1})
    logger.finish()
    assert not logger.enabled and not (tmp_path / "wandb").exists()
    assert WandbLogger(ON, run_dir=tmp_path, rank=1).mode == "disabled"


@pytest.mark.slow  # ~6 s alone (wandb import and its service process), more on a busy machine
def test_offline_run_in_run_folder_resumes_same_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    isolate_wandb(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    try:
        for segment in range(2):  # a first job and its requeued continuation
            logger = WandbLogger(ON, run_dir=run_dir, config={"seed": 3})
            assert logger.mode == "offline"
            logger.log({"kind": "train", "step": 10 * (segment + 1), "loss": {"total": 2.5}})
            logger.finish()
    finally:
        wandb.teardown()
    run_id = (run_dir / "wandb" / "run-id.txt").read_text().strip()
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    # one folder per segment, named by its start second; wandb adds "-1" when two segments
    # start in the same second
    pattern = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run_id)}(-\d+)?")
    assert len(runs) >= 1 and all(pattern.fullmatch(r.name) for r in runs), runs
    data = b"".join(f.read_bytes() for r in runs for f in r.glob(f"run-{run_id}.wandb"))
    assert b"train/loss/total" in data
