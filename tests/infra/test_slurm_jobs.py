"""run.sub on a real Slurm cluster (infra/slurm/local-cluster.sh: slurmctld and two slurmd "nodes"
on this machine): a two-node job of two trials, each two torchrun agents joined by c10d
rendezvous, whose MLPerf logs pass the compliance checker; and the same job preempted with USR1,
checkpointed, requeued and resumed. CPU only, tiny synthetic data (infra/configs/config_CPU_test.sh)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssd_data.synthetic.generate import generate_synthetic_coco
from ssd_train.report.compliance import check_log

from tests.helpers.infra import INFRA, REPO, load_script
from tests.helpers.logs import read_mllog

pytestmark = pytest.mark.slow

score = load_script("mlperf_score.py")
CLUSTER = INFRA / "slurm" / "local-cluster.sh"
CPU_CONFIG = INFRA / "configs" / "config_CPU_test.sh"
JOB_TIMEOUT_S = 420


def _slurm(cluster: dict[str, str], *args: str) -> str:
    return subprocess.run(
        list(args), env=cluster, capture_output=True, text=True, check=True
    ).stdout


def _job_field(cluster: dict[str, str], job: str, field: str) -> str:
    out = _slurm(cluster, "scontrol", "show", "job", "-o", job)
    match = re.search(rf"\b{field}=(\S*)", out)
    assert match, f"no {field} in: {out}"
    return match.group(1)


def _wait(predicate, what: str, timeout: float = JOB_TIMEOUT_S, poll: float = 1.0, on_timeout=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")
        time.sleep(poll)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running two-node test cluster; yields the environment that reaches it (SLURM_CONF)."""
    for tool in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run infra/slurm/install-deps.sh")
    state = tmp_path_factory.mktemp("slurm")
    env = {
        **os.environ,
        "SSD_SLURM_DIR": str(state),
        "SSD_SLURM_CTLD_PORT": "16837",
        "SSD_SLURM_NODE_PORT": "16940",
    }
    started = subprocess.run(
        [str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=120
    )
    logs = "\n".join(
        f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((state / "log").glob("*.log"))
    )
    assert started.returncode == 0, f"{started.stdout}{started.stderr}\n{logs}"
    env["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run([str(CLUSTER), "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic COCO-format dataset, used as DATADIR (the path a real COCO root takes)."""
    root = tmp_path_factory.mktemp("data") / "coco"
    generate_synthetic_coco(root, train_images=16, val_images=8, seed=0)
    return root


def _cpu_config_env() -> dict[str, str]:
    out = subprocess.run(
        ["env", "-i", "bash", "-c", 'source "$1" && env -0', "_", str(CPU_CONFIG)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return {k: v for k, v in env.items() if k not in ("PWD", "SHLVL", "_")}


def _submit(
    cluster: dict[str, str], tmp_path: Path, dataset: Path, **extra: str
) -> tuple[str, dict[str, str]]:
    config = _cpu_config_env()
    env = {
        **cluster,
        **config,
        "DATADIR": str(dataset),
        "LOGDIR": str(tmp_path / "results"),
        "NEXP": "2",
        **extra,
    }
    out = subprocess.run(
        ["sbatch", "--parsable", "-N", config["DGXNNODES"], "-t", config["WALLTIME"],
         "-o", str(tmp_path / "slurm-%j.out"), str(INFRA / "slurm" / "run.sub")],
        env=env, cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.strip().split(";")[0], env


def _diagnostics(cluster: dict[str, str], tmp_path: Path, job: str) -> str:
    parts = [
        subprocess.run(
            ["scontrol", "show", "job", job], env=cluster, capture_output=True, text=True
        ).stdout
    ]
    for path in sorted(tmp_path.rglob("*.out")) + sorted((tmp_path / "results").glob("*.log")):
        parts.append(f"== {path}\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)


def _wait_state(cluster: dict[str, str], tmp_path: Path, job: str, states: tuple[str, ...]) -> str:
    return _wait(
        lambda: (s := _job_field(cluster, job, "JobState")) in states and s,
        f"job {job} to reach {states}",
        on_timeout=lambda: _diagnostics(cluster, tmp_path, job),
    )


def test_two_node_job_runs_two_compliant_trials(
    cluster: dict[str, str], dataset: Path, tmp_path: Path
) -> None:
    job, _ = _submit(cluster, tmp_path, dataset)
    state = _wait_state(cluster, tmp_path, job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))
    details = _diagnostics(cluster, tmp_path, job)
    assert state == "COMPLETED", details
    assert _job_field(cluster, job, "NumNodes") == "2"
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert len(re.findall(r"^RESULT,SINGLE_STAGE_DETECTOR,,\d+,", output, flags=re.M)) == 2, details
    for trial in (1, 2):
        run_dir = tmp_path / "results" / f"{job}-{trial}"
        log = run_dir / "mlperf.log"
        passed, messages = check_log(log, ruleset="1.0.0", division="open")
        assert passed, f"{log}: " + "\n".join(messages)
        events = {e["key"]: e for e in read_mllog(log)}
        # two ranks (one per "node", 4 images each) trained together
        assert events["global_batch_size"]["value"] == 8
        assert events["submission_platform"]["value"] == "2xCPU_test"
        assert events["run_stop"]["metadata"]["status"] in ("success", "aborted")
        assert (run_dir / "slurm-trial.done").read_text().strip() == "0"
        timed = score.read_trial(run_dir)  # what infra/mlperf_score.py reads: run_stop - run_start
        assert timed.minutes is not None and 0 < timed.minutes < 10 and not timed.resumed
        trial_log = (tmp_path / "results" / f"{job}-{trial}.log").read_text()
        assert re.search(r"^RESULT,SINGLE_STAGE_DETECTOR,,\d+,", trial_log, flags=re.M)


def test_usr1_checkpoints_requeues_and_resumes(
    cluster: dict[str, str], dataset: Path, tmp_path: Path
) -> None:
    # trial 2 long enough (2 epochs of 2 steps, ~8 s each) to be stopped mid-run: the stop is
    # asked for once its first step is logged and honoured at the next step boundary
    job, _ = _submit(
        cluster, tmp_path, dataset, SSD_SCHEDULE__MAX_EPOCHS="2", SSD_SCHEDULE__EVAL_EPOCHS="[2]"
    )
    run_dir = tmp_path / "results" / f"{job}-2"
    metrics = run_dir / "metrics.jsonl"
    _wait(
        lambda: metrics.exists() and metrics.read_text().count("\n") >= 1,
        "trial 2 to log its first step",
        on_timeout=lambda: _diagnostics(cluster, tmp_path, job),
        poll=0.5,
    )
    _slurm(cluster, "scancel", "--signal=USR1", "--batch", job)

    # the job requeues itself; Slurm holds a requeued job ~2 minutes (BeginTime): release it now
    _wait(
        lambda: (
            _job_field(cluster, job, "Restarts") == "1"
            and _job_field(cluster, job, "JobState") == "PENDING"
        ),
        "the job to be requeued",
        on_timeout=lambda: _diagnostics(cluster, tmp_path, job),
    )
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints, "no checkpoint written on the stop request"
    assert (run_dir / "requeue").exists()
    first = read_mllog(run_dir / "mlperf.log")
    assert first[-1]["key"] == "run_stop" and first[-1]["metadata"]["status"] == "aborted"
    # not at once: the old allocation's job credential is revoked for the rest of that second,
    # and a batch job launched with it is killed ("Job credential revoked")
    time.sleep(5)
    _slurm(cluster, "scontrol", "update", f"JobId={job}", "StartTime=now")

    state = _wait_state(cluster, tmp_path, job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))
    details = _diagnostics(cluster, tmp_path, job)
    assert state == "COMPLETED", details
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert "USR1: asking the workers to checkpoint and stop" in output
    assert f"trial 2: checkpointed on request (exit status 0); requeueing job {job}" in output
    assert "trial 1: finished in an earlier segment (exit status 0), skipped" in output
    assert "trial 2: resuming from the checkpoints" in output
    # the resumed segment wrote its own log and finished the run
    resumed = read_mllog(run_dir / "mlperf.resume-1.log")
    assert resumed[-1]["key"] == "run_stop", details
    assert not list(
        (tmp_path / "results" / f"{job}-1").glob("mlperf.resume-*.log")
    )  # trial 1 ran once
    assert (run_dir / "slurm-trial.done").read_text().strip() == "0"
    assert not (run_dir / "requeue").exists()
    assert score.read_trial(run_dir).resumed  # an interrupted trial is not a valid MLPerf result


def test_time_limit_warning_reaches_the_trap(cluster: dict[str, str], tmp_path: Path) -> None:
    """Slurm itself sends USR1 near the time limit (--signal=B:USR1@<secs>): the trap writes the
    stop file and the job requeues itself. The trial here is a stand-in run_and_time.sh that
    waits for the stop file and answers with the requeue marker, as the trainer does."""
    repo = tmp_path / "checkout"
    (repo / "infra").mkdir(parents=True)
    fake = repo / "infra" / "run_and_time.sh"
    fake.write_text(
        "#!/bin/bash\n"
        'while [ ! -f "$SSD_RUN_DIR/STOP" ]; do sleep 0.2; done\n'
        '[ "$SLURM_NODEID" = 0 ] && echo \'{"reason": "stop file"}\' > "$SSD_RUN_DIR/requeue"\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    env = {
        **cluster,
        **_cpu_config_env(),
        "SSD_REPO": str(repo),
        "SSD_VENV": str(REPO / ".venv"),
        "LOGDIR": str(tmp_path / "results"),
        "NEXP": "1",
    }
    # 2-minute limit, warning 100 s before it: Slurm checks limits every ~30 s, so it comes
    # 20-50 s after the start
    job = subprocess.run(
        ["sbatch", "--parsable", "-N", "2", "-t", "2", "--signal=B:USR1@100",
         "-o", str(tmp_path / "slurm-%j.out"), str(INFRA / "slurm" / "run.sub")],
        env=env, cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip().split(";")[0]  # fmt: skip
    try:
        _wait(
            lambda: _job_field(cluster, job, "Restarts") == "1",
            "the job to requeue itself after Slurm's USR1",
            timeout=150,
            on_timeout=lambda: _diagnostics(cluster, tmp_path, job),
        )
        output = (tmp_path / f"slurm-{job}.out").read_text()
        assert "USR1: asking the workers to checkpoint and stop" in output
        assert f"trial 1: checkpointed on request (exit status 0); requeueing job {job}" in output
        assert (tmp_path / "results" / f"{job}-1" / "STOP").exists()
    finally:
        subprocess.run(["scancel", job], env=cluster, capture_output=True)
