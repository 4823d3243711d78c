"""run_with_docker.sh against a stand-in docker: the exact container, mounts, environment and
commands of the seed's nvidia-docker launch (config sourced first, one `docker exec` per trial)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.infra import INFRA
from tests.helpers.infra_standins import base_env, install_standins, read_calls

SCRIPT = INFRA / "docker" / "run_with_docker.sh"


def _run(tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess[str], Path, Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    install_standins(bin_dir)
    data, logs = tmp_path / "coco", tmp_path / "results"
    data.mkdir(exist_ok=True)
    env = base_env(bin_dir, log)
    # only DGXSYSTEM comes from the caller: the script sources the config file itself first
    env.update(
        {
            "DGXSYSTEM": "DGXA100",
            "CONT": "ssd-mlperf:test",
            "DATADIR": str(data),
            "LOGDIR": str(logs),
            "NEXP": "2",
            "DATESTAMP": "260101",
            "SUBMISSION_ORG": "test-org",
            "SSD_SEED": "7",
        }
    )
    env.update(extra)
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    return result, log, data, logs


def test_exact_docker_commands_mounts_and_environment(tmp_path: Path) -> None:
    result, log, data, logs = _run(tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    calls = read_calls(log, "docker")
    argvs = [c["argv"] for c in calls]
    assert argvs[0] == ["container", "rm", "-f", "ssd_mlperf"]  # a leftover container is removed
    assert argvs[1] == [
        "run", "--rm", "--init", "--detach", "--gpus=all",
        "--net=host", "--uts=host", "--ipc=host", "--security-opt=seccomp=unconfined",
        "--ulimit=stack=67108864", "--ulimit=memlock=-1",
        "--name=ssd_mlperf",
        f"--volume={data}:/data:ro", f"--volume={logs}:/results",
        "ssd-mlperf:test", "sleep", "infinity",
    ]  # fmt: skip
    assert argvs[2] == ["exec", "ssd_mlperf", "true"]
    trials = [
        c for c in calls if c["argv"][0] == "exec" and c["argv"][-1] == "./infra/run_and_time.sh"
    ]
    assert len(trials) == 2
    for index, call in enumerate(trials, start=1):
        argv = call["argv"]
        assert argv[-2:] == ["ssd_mlperf", "./infra/run_and_time.sh"]
        assert all(a.startswith("--env=") for a in argv[1:-2])
        explicit = dict(
            a[len("--env=") :].split("=", 1) for a in argv[1:-2] if "=" in a[len("--env=") :]
        )
        assert explicit == {
            "SSD_DATA__ROOT": "/data",
            "TORCH_HOME": "/data/torch",
            "NPROC_PER_NODE": "8",
            "MLPERF_CACHE_CLEARED": "true",
            "SSD_RUN_DIR": f"/results/260101-{index}",
        }
        # --env=NAME passes this shell's value: the config file's variables and the settings
        passed = {k[len("docker:") :]: v for k, v in call["env"].items() if k.startswith("docker:")}
        expected = {
            "DGXSYSTEM": "DGXA100",
            "DGXNNODES": "1",
            "DGXNGPU": "8",
            "DGXSOCKETCORES": "64",
            "DGXNSOCKET": "2",
            "DGXHT": "2",
            "WALLTIME": "40",  # NEXP=2 x 20 minutes
            "SSD_CONFIG": "infra/configs/dgxa100.toml",
            "SSD_SEED": "7",
            "SUBMISSION_ORG": "test-org",
            "SSD_LOGGING__MLPERF__PLATFORM": "1xDGXA100",
        }
        assert {k: passed.get(k) for k in expected} == expected
        assert "MLPERF_HOST_OS" in passed
    assert argvs[-1] == ["container", "rm", "-f", "ssd_mlperf"]  # cleaned up on exit
    # the host's page cache was dropped before each trial, through sysctl
    assert [c["argv"] for c in read_calls(log, "sysctl")] == [["-q", "vm.drop_caches=3"]] * 2
    for index in (1, 2):  # each trial's output teed to its own log
        assert "RESULT,SINGLE_STAGE_DETECTOR,,42," in (logs / f"260101-{index}.log").read_text()


def test_without_cache_clearing_logs_false(tmp_path: Path) -> None:
    result, log, _, _ = _run(tmp_path, CLEAR_CACHES="0", NEXP="1")
    assert result.returncode == 0, result.stderr
    trial = [c for c in read_calls(log, "docker") if c["argv"][-1] == "./infra/run_and_time.sh"]
    assert "--env=MLPERF_CACHE_CLEARED=false" in trial[0]["argv"]
    assert read_calls(log, "sysctl") == []


def test_unknown_system_and_missing_image_are_explained(tmp_path: Path) -> None:
    result, *_ = _run(tmp_path, DGXSYSTEM="DGX9000")
    assert result.returncode == 2
    assert "no config for DGXSYSTEM=DGX9000" in result.stderr
    result, *_ = _run(tmp_path, CONT="")
    assert result.returncode != 0
    assert "CONT is not set" in result.stderr
