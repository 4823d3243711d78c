"""MLPerfLogger: epoch numbering, call order, segments, divisions (checker runs: test_compliance)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from ssd_train.report.compliance import check_log
from ssd_train.report.config import MLPerfConfig
from ssd_train.report.mlperf_log import (
    MLPerfHyperparameters,
    MLPerfLogger,
    closed_rule_violations,
    evaluation_blocks,
    resolve_division,
    segment_log_path,
)

from tests.helpers.logs import MLLOG_PREFIX, read_mllog
from tests.helpers.mlperf import NVIDIA_DGXA100


def records(path: Path) -> list[dict]:
    """Every line of ``path`` is an MLLOG record."""
    assert all(line.startswith(MLLOG_PREFIX) for line in path.read_text().splitlines())
    return read_mllog(path)


def start_run(log: MLPerfLogger, hp: MLPerfHyperparameters = NVIDIA_DGXA100) -> None:
    log.submission_info("closed", "1xCPU")
    log.cache_clear()
    log.init_start()
    log.hyperparameters(hp)
    log.init_stop()
    log.run_start()
    log.dataset_sizes(train_samples=117266, eval_samples=4952)


def test_epoch_numbers_follow_nvidia_v07(tmp_path: Path) -> None:
    # NVIDIA dgxa100 result_0 (spec 6.1): block_start {first_epoch_num 1, epoch_count 40},
    # epochs logged 1-based, the evaluation after 40 finished epochs logged with epoch_num 40.
    log = MLPerfLogger(tmp_path, MLPerfConfig(echo_stdout=False))
    start_run(log)
    log.block_start(first_epoch=0, epoch_count=40)
    for epoch in range(40):  # NVIDIA's epoch e starts at iteration ceil(e * 14658 / 114)
        log.epoch_start(epoch, iteration=math.ceil(epoch * 14658 / 114))
        log.epoch_stop(epoch, iteration=math.ceil((epoch + 1) * 14658 / 114))
    log.block_stop()
    log.eval_result(0.1816, epochs_done=40)
    log.block_start(first_epoch=40, epoch_count=10)
    log.run_stop("aborted")
    log.close()

    recs = records(tmp_path / "mlperf.log")
    by_key: dict[str, list[dict]] = {}
    for r in recs:
        by_key.setdefault(r["key"], []).append(r)
    assert [r["metadata"]["epoch_num"] for r in by_key["epoch_start"]] == list(range(1, 41))
    assert [r["metadata"]["epoch_num"] for r in by_key["epoch_stop"]] == list(range(1, 41))
    # NVIDIA dgxa100 result_0: epoch_start current_iter_num of 1-based epochs 1..11
    starts = [r["metadata"]["current_iter_num"] for r in by_key["epoch_start"]]
    assert starts[:11] == [0, 129, 258, 386, 515, 643, 772, 901, 1029, 1158, 1286]
    stops = [r["metadata"]["current_iter_num"] for r in by_key["epoch_stop"]]
    assert stops[:10] == starts[1:11]  # an epoch stops where the next one starts
    first, second = by_key["block_start"]
    assert (first["metadata"]["first_epoch_num"], first["metadata"]["epoch_count"]) == (1, 40)
    assert (second["metadata"]["first_epoch_num"], second["metadata"]["epoch_count"]) == (41, 10)
    # run_stop closes the open second block with its own first_epoch_num
    assert [r["metadata"]["first_epoch_num"] for r in by_key["block_stop"]] == [1, 41]
    for key in ("eval_start", "eval_accuracy", "eval_stop"):
        assert by_key[key][0]["metadata"]["epoch_num"] == 40
    assert by_key["eval_accuracy"][0]["value"] == pytest.approx(0.1816)
    # an asynchronous result: the three eval lines share one timestamp (as NVIDIA logs them)
    assert len({by_key[k][0]["time_ms"] for k in ("eval_start", "eval_accuracy", "eval_stop")}) == 1
    assert by_key["run_stop"][0]["metadata"]["status"] == "aborted"
    # the metadata names the caller (this test), not the logger module
    assert by_key["epoch_start"][0]["metadata"]["file"].endswith("test_mlperf_log.py")


def test_header_keys_and_values(tmp_path: Path) -> None:
    cfg = MLPerfConfig(org="ACME", status="research", echo_stdout=False)
    with MLPerfLogger(tmp_path, cfg) as log:
        start_run(log)
        log.run_stop("success")
    values = {r["key"]: r["value"] for r in records(tmp_path / "mlperf.log")}
    assert values["submission_benchmark"] == "ssd"
    assert values["submission_org"] == "ACME"
    assert values["submission_status"] == "research"
    assert values["submission_division"] == "closed"
    assert values["submission_platform"] == "1xCPU"
    assert values["cache_clear"] is True
    assert values["opt_learning_rate_decay_boundary_epochs"] == [44, 55]
    assert values["opt_learning_rate_decay_steps"] == [44, 55]  # as NVIDIA's log has it
    assert values["opt_base_learning_rate"] == 0.09
    assert values["model_bn_span"] == 114
    assert values["gradient_accumulation_steps"] == 1
    assert values["max_samples"] == 1
    assert values["train_samples"] == 117266


def test_order_mistakes_raise(tmp_path: Path) -> None:
    log = MLPerfLogger(tmp_path, MLPerfConfig(echo_stdout=False))
    log.submission_info("open", "1xCPU")
    with pytest.raises(RuntimeError, match="init_start"):
        log.init_stop()
    log.init_start()
    with pytest.raises(RuntimeError, match="init_stop"):
        log.run_start()
    log.hyperparameters(NVIDIA_DGXA100)
    with pytest.raises(RuntimeError, match="once"):
        log.hyperparameters(NVIDIA_DGXA100)
    log.init_stop()
    with pytest.raises(RuntimeError, match="run_start"):
        log.dataset_sizes(train_samples=1, eval_samples=1)
    with pytest.raises(RuntimeError, match="run_start"):
        log.epoch_start(0)
    log.run_start()
    with pytest.raises(RuntimeError, match="block_stop without"):
        log.block_stop()
    with pytest.raises(ValueError, match="status"):
        log.run_stop("failed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="division"):
        MLPerfLogger(tmp_path / "x", MLPerfConfig(echo_stdout=False)).submission_info(
            "research",
            "1xCPU",  # type: ignore[arg-type]
        )
    log.close()


def test_close_without_run_stop_logs_aborted(tmp_path: Path) -> None:
    log = MLPerfLogger(tmp_path, MLPerfConfig(echo_stdout=False))
    start_run(log)
    log.close()
    last = records(tmp_path / "mlperf.log")[-1]
    assert (last["key"], last["metadata"]["status"]) == ("run_stop", "aborted")
    with pytest.raises(RuntimeError, match="closed"):
        log.cache_clear()


def test_only_rank_zero_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = MLPerfLogger(tmp_path, MLPerfConfig(), rank=1)
    start_run(log)
    log.run_stop("success")
    log.close()
    assert log.path is None
    assert list(tmp_path.iterdir()) == []
    assert ":::MLLOG" not in capsys.readouterr().out


def test_stdout_echo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with MLPerfLogger(tmp_path, MLPerfConfig(echo_stdout=True)) as log:
        log.cache_clear()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith(":::MLLOG ")
    assert json.loads(out[0][9:])["key"] == "cache_clear"
    assert (tmp_path / "mlperf.log").read_text().splitlines() == out


def test_segments_never_overwrite(tmp_path: Path) -> None:
    names = []
    for _ in range(3):
        with MLPerfLogger(tmp_path, MLPerfConfig(echo_stdout=False)) as log:
            log.cache_clear()
            names.append(log.path.name)
    assert names == ["mlperf.log", "mlperf.resume-1.log", "mlperf.resume-2.log"]
    assert segment_log_path(tmp_path).name == "mlperf.resume-3.log"


def test_evaluation_blocks() -> None:
    # NVIDIA v0.7: evaluate after 40, 50, 55, ... 75 epochs; the last 5 epochs (to 80) unevaluated
    evals = [40, 50, 55, 60, 65, 70, 75]
    assert evaluation_blocks(evals, 80) == [
        (0, 40), (40, 10), (50, 5), (55, 5), (60, 5), (65, 5), (70, 5), (75, 5)
    ]  # fmt: skip
    assert evaluation_blocks([*evals, 80], 80) == evaluation_blocks(evals, 80)
    assert evaluation_blocks([2, 4], 5) == [(0, 2), (2, 2), (4, 1)]
    assert evaluation_blocks([40, 50], 60, start_epoch=45) == [(45, 5), (50, 10)]


def test_division_rules() -> None:
    assert closed_rule_violations(NVIDIA_DGXA100, 0.23) == []
    # the reference's boundaries [40, 50] and the DGX-2H multi-node ones are closed-legal too
    legal = MLPerfHyperparameters(**{**NVIDIA_DGXA100.__dict__, "decay_boundary_epochs": [40, 50]})
    assert closed_rule_violations(legal, 0.23) == []
    short = MLPerfHyperparameters(
        **{**NVIDIA_DGXA100.__dict__, "decay_boundary_epochs": [3, 4], "warmup_steps": 0}
    )
    problems = closed_rule_violations(short, 0.23)
    assert any("decay" in p for p in problems) and any("warm-up steps" in p for p in problems)
    assert any("target" in p for p in closed_rule_violations(NVIDIA_DGXA100, 0.2))

    assert (
        resolve_division("auto", real_dataset=True, hp=NVIDIA_DGXA100, target_map=0.23) == "closed"
    )
    assert (
        resolve_division("auto", real_dataset=False, hp=NVIDIA_DGXA100, target_map=0.23) == "open"
    )
    assert resolve_division("auto", real_dataset=True, hp=short, target_map=0.23) == "open"
    assert resolve_division("open", real_dataset=True, hp=NVIDIA_DGXA100, target_map=0.23) == "open"
    with pytest.raises(ValueError, match=r"division=closed.*decay boundary epochs \[3, 4\]"):
        resolve_division("closed", real_dataset=True, hp=short, target_map=0.23)


@pytest.mark.parametrize("ruleset", ["0.7.0", "1.0.0"])
def test_closed_checker_accepts_nvidia_keys_and_iteration_metadata(
    tmp_path: Path, ruleset: str
) -> None:
    # opt_learning_rate_decay_steps and current_iter_num are not in the closed_ssd rules:
    # the official checker must still pass a closed log that carries them
    log = MLPerfLogger(tmp_path, MLPerfConfig(echo_stdout=False))
    start_run(log)
    for first, count in ((0, 2), (2, 1)):
        log.block_start(first_epoch=first, epoch_count=count)
        for epoch in range(first, first + count):
            log.epoch_start(epoch, iteration=math.ceil(epoch * 14658 / 114))
            log.epoch_stop(epoch, iteration=math.ceil((epoch + 1) * 14658 / 114))
        log.block_stop()
        log.eval_result(0.1 if first == 0 else 0.235, first + count)
    log.run_stop("success")
    log.close()
    keys = [r["key"] for r in records(tmp_path / "mlperf.log")]
    assert keys.count("opt_learning_rate_decay_steps") == 1
    ok, messages = check_log(tmp_path / "mlperf.log", ruleset, division="closed")
    assert ok, messages
