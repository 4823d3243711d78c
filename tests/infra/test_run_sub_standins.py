"""run.sub against stand-in srun/scontrol: the exact commands, mounts and environment it launches,
the requeue/resume bookkeeping, and the USR1 trap (spec interfaces.md, preemption)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.infra import INFRA, REPO, sourced_env
from tests.helpers.infra_standins import base_env, install_standins, read_calls

RUN_SUB = INFRA / "slurm" / "run.sub"
CONFIG = INFRA / "configs" / "config_DGXA100_multi_2x8x56.sh"
CONFIG_VARS = [
    "DGXSYSTEM",
    "DGXNNODES",
    "DGXNGPU",
    "WALLTIME",
    "SSD_CONFIG",
    "DGXSOCKETCORES",
    "DGXNSOCKET",
    "DGXHT",
]
JOB = "4242"
CACHE_CLEAR_SCRIPT = (
    'sync && { if [ "$(id -u)" = 0 ]; then sysctl -q vm.drop_caches=3; '
    "else sudo -n /sbin/sysctl -q vm.drop_caches=3; fi; }"
)
NODE_STEP = ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1"]


@pytest.fixture
def batch(tmp_path: Path) -> dict:
    """Stand-ins on PATH and the environment sbatch would give run.sub for a 2-node job."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    install_standins(bin_dir)
    data, logs = tmp_path / "coco", tmp_path / "results"
    data.mkdir()
    env = base_env(bin_dir, log)
    env.update(sourced_env(CONFIG, CONFIG_VARS))
    env.update(
        {
            "SLURM_JOB_ID": JOB,
            "SLURM_JOB_NODELIST": "nodeA,nodeB",
            "SLURM_JOB_NUM_NODES": "2",
            "SLURM_CPUS_ON_NODE": "256",
            "SLURM_SUBMIT_DIR": str(REPO),
            "DATADIR": str(data),
            "LOGDIR": str(logs),
            "NEXP": "2",
            "SUBMISSION_ORG": "test-org",
            "SUBMISSION_STATUS": "research",
        }
    )
    return {"env": env, "log": log, "data": data, "logs": logs}


def _run(batch: dict, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**batch["env"], **extra}
    return subprocess.run(
        ["bash", str(RUN_SUB)], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def _trial_calls(batch: dict) -> list[dict]:
    return [
        c
        for c in read_calls(batch["log"], "srun")
        if c["argv"][-1].endswith("infra/run_and_time.sh")
    ]


def test_pyxis_path_exact_commands_mounts_and_environment(batch: dict) -> None:
    result = _run(batch, CONT="registry.example/ssd:1")
    assert result.returncode == 0, result.stderr + result.stdout
    data, logs = batch["data"], batch["logs"]
    sruns = read_calls(batch["log"], "srun")
    container = [
        "--container-name=ssd_4242",
        f"--container-mounts={data}:/data:ro,{logs}:/results",
        "--container-workdir=/workspace/ssd",
    ]
    trial = [
        *NODE_STEP,
        "--kill-on-bad-exit=1",
        *container,
        "--cpus-per-task=256",
        "--cpu-bind=none",
    ]
    assert [c["argv"] for c in sruns] == [
        # the container is created once per node ...
        [
            *NODE_STEP,
            "--kill-on-bad-exit=1",
            "--container-image=registry.example/ssd:1",
            "--container-name=ssd_4242",
            "true",
        ],
        # ... then per trial: page cache dropped on the hosts, one torchrun agent per node
        [*NODE_STEP, "bash", "-c", CACHE_CLEAR_SCRIPT],
        [
            *trial,
            f"--output={logs}/4242-1.log",
            "--open-mode=append",
            "/workspace/ssd/infra/run_and_time.sh",
        ],
        [*NODE_STEP, "bash", "-c", CACHE_CLEAR_SCRIPT],
        [
            *trial,
            f"--output={logs}/4242-2.log",
            "--open-mode=append",
            "/workspace/ssd/infra/run_and_time.sh",
        ],
    ]
    for index, call in enumerate(_trial_calls(batch), start=1):
        env = call["env"]
        expected = {
            "SSD_RUN_DIR": f"/results/4242-{index}",
            "RDZV_ID": f"4242-{index}-r0",
            "NNODES": "2",
            "NPROC_PER_NODE": "8",
            "MASTER_ADDR": "10.1.2.3",  # NodeAddr of the first node
            "MASTER_PORT": str(20000 + 4242),
            "SSD_CONFIG": "infra/configs/dgxa100_multi_2x8x56.toml",
            "SSD_DATA__ROOT": "/data",
            "TORCH_HOME": "/data/torch",
            "SSD_LOGGING__MLPERF__PLATFORM": "2xDGXA100_multi_2x8x56",
            "SSD_LOGGING__MLPERF__ORG": "test-org",
            "SSD_LOGGING__MLPERF__STATUS": "research",
            "MLPERF_CACHE_CLEARED": "true",
            "DGXSYSTEM": "DGXA100_multi_2x8x56",
        }
        assert {k: env.get(k) for k in expected} == expected
        assert "SSD_LOGGING__MLPERF__DIVISION" not in env  # the trainer decides unless told
    # each trial: its run folder, marked finished; RESULT lines echoed into the job output
    for trial_dir in (logs / "4242-1", logs / "4242-2"):
        assert (trial_dir / "slurm-trial.done").read_text().strip() == "0"
    assert result.stdout.count("RESULT,SINGLE_STAGE_DETECTOR,,42,test-org,") == 2
    assert read_calls(batch["log"], "scontrol")[-1]["argv"][:2] == ["show", "node"]


def test_local_path_runs_this_checkout(batch: dict) -> None:
    result = _run(batch, NEXP="1", CLEAR_CACHES="0")
    assert result.returncode == 0, result.stderr + result.stdout
    logs, data = batch["logs"], batch["data"]
    sruns = read_calls(batch["log"], "srun")
    assert [c["argv"] for c in sruns] == [
        [
            *NODE_STEP,
            "--kill-on-bad-exit=1",
            "--cpus-per-task=256",
            "--cpu-bind=none",
            f"--output={logs}/4242-1.log",
            "--open-mode=append",
            f"{REPO}/infra/run_and_time.sh",
        ]
    ]
    env = sruns[0]["env"]
    assert env["SSD_RUN_DIR"] == f"{logs}/4242-1"
    assert env["SSD_DATA__ROOT"] == str(data)
    assert env["TORCH_HOME"] == f"{data}/torch"
    assert env["MLPERF_CACHE_CLEARED"] == "false"
    assert env["PATH"].startswith(f"{REPO}/.venv/bin:")


def test_requeue_marker_requeues_then_resumes_and_skips_finished_trials(batch: dict) -> None:
    logs = batch["logs"]
    # segment 1: trial 1 is stopped and leaves the requeue marker -> the job requeues itself
    first = _run(batch, CONT="img", STANDIN_TRIAL="requeue")
    assert first.returncode == 0, first.stderr + first.stdout
    assert [
        c["argv"] for c in read_calls(batch["log"], "scontrol") if c["argv"][0] == "requeue"
    ] == [["requeue", JOB]]
    assert len(_trial_calls(batch)) == 1
    assert not (logs / "4242-2").exists()
    assert not (logs / "4242-1" / "slurm-trial.done").exists()
    first_seed = _trial_calls(batch)[0]["env"]["SSD_SEED"]

    # segment 2 (SLURM_RESTART_COUNT=1): trial 1 resumes in the same folder, then trial 2 runs
    batch["log"].unlink()
    second = _run(batch, CONT="img", SLURM_RESTART_COUNT="1")
    assert second.returncode == 0, second.stderr + second.stdout
    assert "trial 1: resuming from the checkpoints" in second.stdout
    assert [(c["env"]["SSD_RUN_DIR"], c["env"]["RDZV_ID"]) for c in _trial_calls(batch)] == [
        ("/results/4242-1", "4242-1-r1"),
        ("/results/4242-2", "4242-2-r1"),
    ]
    assert not (logs / "4242-1" / "requeue").exists()  # consumed before the resumed segment
    # a random seed per trial, the same when the trial resumes
    seeds = [c["env"]["SSD_SEED"] for c in _trial_calls(batch)]
    assert seeds[0] == first_seed and seeds[0] != seeds[1]
    assert all(0 <= int(seed) < 2**31 for seed in seeds)
    assert not [c for c in read_calls(batch["log"], "scontrol") if c["argv"][0] == "requeue"]

    # segment 3: nothing left to do
    batch["log"].unlink()
    third = _run(batch, CONT="img", SLURM_RESTART_COUNT="2")
    assert third.returncode == 0
    assert _trial_calls(batch) == []
    assert third.stdout.count("finished in an earlier segment (exit status 0), skipped") == 2


def test_a_given_seed_is_used_by_every_trial(batch: dict) -> None:
    assert _run(batch, CONT="img", SSD_SEED="1234").returncode == 0
    assert [c["env"]["SSD_SEED"] for c in _trial_calls(batch)] == ["1234", "1234"]


def test_failed_trial_is_recorded_and_fails_the_job(batch: dict) -> None:
    result = _run(batch, CONT="img", STANDIN_TRIAL="fail")
    assert result.returncode != 0
    assert "trial 1: FAILED with exit status 3" in result.stdout
    assert (batch["logs"] / "4242-2" / "slurm-trial.done").read_text().strip() == "3"


def test_a_failure_before_a_requeue_still_fails_the_job(batch: dict) -> None:
    first = _run(batch, CONT="img", STANDIN_TRIAL="fail,requeue")
    assert first.returncode == 0  # requeued during trial 2
    batch["log"].unlink()
    second = _run(batch, CONT="img", SLURM_RESTART_COUNT="1")
    assert "trial 1: finished in an earlier segment (exit status 3), skipped" in second.stdout
    assert [c["env"]["SSD_RUN_DIR"] for c in _trial_calls(batch)] == ["/results/4242-2"]
    assert second.returncode != 0
    assert "all 2 trial(s) done, 1 failed" in second.stdout


def test_usr1_writes_stop_file_and_requeues(batch: dict) -> None:
    env = {**batch["env"], "CONT": "img", "STANDIN_TRIAL": "wait_stop"}
    proc = subprocess.Popen(
        ["bash", str(RUN_SUB)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _trial_calls(batch):
            assert time.monotonic() < deadline, "the trial step never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)  # what `scancel --signal=USR1 --batch` delivers
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr + stdout
    run_dir = batch["logs"] / "4242-1"
    assert (run_dir / "STOP").exists()
    assert "USR1: asking the workers to checkpoint and stop" in stdout
    assert [
        c["argv"] for c in read_calls(batch["log"], "scontrol") if c["argv"][0] == "requeue"
    ] == [["requeue", JOB]]
    assert len(_trial_calls(batch)) == 1  # trial 2 did not start


def test_missing_config_and_data_are_explained(batch: dict) -> None:
    env = {k: v for k, v in batch["env"].items() if k != "DGXSYSTEM"}
    result = subprocess.run(
        ["bash", str(RUN_SUB)], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DGXSYSTEM is not set: source infra/configs/config_<SYSTEM>.sh" in result.stderr
    result = _run(batch, DATADIR="")
    assert result.returncode == 2
    assert "DATADIR is not set" in result.stderr and "SSD_ALLOW_SYNTHETIC=1" in result.stderr
    result = _run(batch, DATADIR=str(batch["data"] / "missing"))
    assert result.returncode == 2 and "is not a directory" in result.stderr
