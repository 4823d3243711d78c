"""Project minutes to mAP 0.23 on a preset's system from a measured training-step rate.

    uv run ssd-train --mode benchmark --data.batch-size 114 --benchmark.json bench.json
    uv run python infra/time_to_train.py bench.json --preset dgxa100 [--preset dgx1 ...]

Input: the benchmark JSON (``img_per_s`` of the whole benchmark job, its ``world_size`` and
per-rank ``batch_size``; the other keys are printed when present) and one or more presets
``infra/configs/<preset>.toml`` (read with ``ssd_train.settings.load_settings``); the preset's
ranks come from the ``config_*.sh`` that names it (``DGXNNODES`` x ``DGXNGPU``).

Model (each term printed):

- system rate R = img_per_s / world_size x ranks x ``--scaling-efficiency`` (1.0: perfect);
- epochs E: the expected convergence epoch for the global batch B = per-rank batch x ranks,
  rounded up to the preset's next evaluation epoch (a run stops only at an evaluation).
  Expected epoch: 50 for B <= 1024 (MLPerf RCP at 1024: 10 of 10 reference runs at 50 epochs;
  NVIDIA's v0.7 logs at B = 896, 912, 960: 50 in every run); between 1024 and 4096 linear in B
  between the RCP olympic means (2048: 65.1, 4096: 87.0; ``mlperf_logging/rcp_checker/
  training_1.0.0/rcps_ssd.json``; NVIDIA's v0.7 4x16x24 at B = 1536: 60, interpolated 57.5 -> the
  evaluation at 60); above 4096: no data, no projection;
- training: E x 117,266 images (train2017 images with annotations) / R;
- evaluation: per evaluation up to E, inference on the 4,952 annotated val2017 images at
  ``--eval-speedup`` x R (forward only: about 3x a forward+backward step) plus
  ``--eval-overhead-s``; scoring runs in the background except after the last evaluation:
  ``--score-s`` (ssd-eval: 10.2 CPU s for 5,000 images x 200 detections, docs/benchmarks.md);
- start-up inside the timed region (``--startup-s``: compilation and loader warm-up; 60 s assumed).

The last column inverts the model: the training rate per rank at which the projection equals
NVIDIA's published time for that system (same epochs, evaluations and start-up).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "infra" / "configs"
IMAGES_PER_EPOCH = 117_266
EVAL_IMAGES = 4_952
#: Olympic means of the MLPerf training_1.0.0 SSD reference convergence points (epochs).
RCP_MEANS = {1024: 50.0, 2048: 65.0862, 4096: 87.0}
#: NVIDIA's published MLPerf v0.7 times (minutes; mean of 5 runs without fastest and slowest).
NVIDIA_V07_MINUTES = {
    "dgxa100": 10.215,
    "dgxa100_multi_2x8x56": 5.678,
    "dgx2_multi_4x16x24": 3.934,
    "dgx2": 9.655,
    "dgx1": 20.690,
}


class ProjectionError(ValueError):
    """Bad input (benchmark json, preset); the message names the file and the problem."""


def rcp_means() -> dict[int, float]:
    """Olympic means per global batch, from the installed checker's json when there is one."""
    try:
        import mlperf_logging

        path = Path(mlperf_logging.__file__).parent / "rcp_checker/training_1.0.0/rcps_ssd.json"
        out = {}
        for record in json.loads(path.read_text()).values():
            epochs = sorted(record["Epochs to converge"])
            out[int(record["BS"])] = sum(epochs[1:-1]) / (len(epochs) - 2)
        return out
    except (ImportError, OSError, KeyError, ValueError):
        return dict(RCP_MEANS)


def expected_epochs(global_batch: int, means: dict[int, float] | None = None) -> float:
    """Expected convergence epoch at ``global_batch`` (see the module docstring)."""
    means = means or rcp_means()
    batches = sorted(means)
    if global_batch <= batches[0]:
        return means[batches[0]]
    if global_batch > batches[-1]:
        raise ProjectionError(
            f"global batch {global_batch} is above the largest SSD RCP ({batches[-1]}): "
            "no convergence data to project from"
        )
    for low, high in itertools.pairwise(batches):
        if low <= global_batch <= high:
            f = (global_batch - low) / (high - low)
            return means[low] + f * (means[high] - means[low])
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Preset:
    name: str
    ranks: int
    batch_per_rank: int
    eval_epochs: list[int]  # every evaluation epoch up to max_epochs

    @property
    def global_batch(self) -> int:
        return self.ranks * self.batch_per_rank


def preset_ranks(toml: Path) -> int:
    """DGXNNODES x DGXNGPU of the config_*.sh whose SSD_CONFIG names ``toml``."""
    for sh in sorted(toml.parent.glob("config_*.sh")):
        text = sh.read_text()
        if re.search(rf"SSD_CONFIG=\S*{re.escape(toml.name)}\b", text):
            values = {k: int(v) for k, v in re.findall(r"export (DGXNNODES|DGXNGPU)=(\d+)", text)}
            if len(values) == 2:
                return values["DGXNNODES"] * values["DGXNGPU"]
    raise ProjectionError(
        f"no config_*.sh in {toml.parent} names {toml.name} with DGXNNODES/DGXNGPU"
    )


def load_preset(name: str, configs: Path = CONFIGS) -> Preset:
    """A preset's ranks, per-rank batch and evaluation epochs."""
    from ssd_train.settings import SettingsLoadError, load_settings

    toml = configs / f"{name}.toml"
    if not toml.is_file():
        known = ", ".join(sorted(p.stem for p in configs.glob("*.toml")))
        raise ProjectionError(f"no preset {toml}; presets: {known}")
    try:
        settings = load_settings(["--config", str(toml)])
    except SettingsLoadError as e:
        raise ProjectionError(f"{toml}: {e}") from None
    sched = settings.schedule
    evals = [e for e in range(1, sched.max_epochs + 1) if sched.is_eval_epoch(e)]
    return Preset(name, preset_ranks(toml), settings.data.batch_size, evals)


@dataclass(frozen=True)
class Projection:
    preset: Preset
    system_img_s: float
    expected_epochs: float
    epochs: int | None  # None: no evaluation at or after the expected epoch
    evaluations: int
    train_s: float
    eval_s: float
    startup_s: float

    eval_speedup: float = 3.0
    eval_overhead_s: float = 1.0
    score_s: float = 10.0

    @property
    def total_minutes(self) -> float:
        return (self.startup_s + self.train_s + self.eval_s) / 60.0

    def rate_per_rank_for(self, minutes: float) -> float | None:
        """img/s per rank at which the projection equals ``minutes`` (None: not reachable)."""
        if self.epochs is None:
            return None
        work = self.epochs * IMAGES_PER_EPOCH + self.evaluations * EVAL_IMAGES / self.eval_speedup
        fixed = self.startup_s + self.evaluations * self.eval_overhead_s + self.score_s
        seconds = minutes * 60.0 - fixed
        return work / seconds / self.preset.ranks if seconds > 0 else None


def project(
    preset: Preset,
    img_per_s: float,
    world_size: int,
    *,
    scaling_efficiency: float = 1.0,
    eval_speedup: float = 3.0,
    eval_overhead_s: float = 1.0,
    score_s: float = 10.0,
    startup_s: float = 60.0,
) -> Projection:
    """Projected time to 0.23 for ``preset`` from a measured rate (see the module docstring)."""
    rate = img_per_s / world_size * preset.ranks * scaling_efficiency
    wanted = expected_epochs(preset.global_batch)
    later = [e for e in preset.eval_epochs if e >= wanted - 1e-9]
    epochs = later[0] if later else None
    horizon = epochs if epochs is not None else (preset.eval_epochs or [0])[-1]
    evaluations = sum(1 for e in preset.eval_epochs if e <= horizon)
    train_s = horizon * IMAGES_PER_EPOCH / rate
    eval_s = evaluations * (EVAL_IMAGES / (eval_speedup * rate) + eval_overhead_s) + score_s
    return Projection(
        preset, rate, wanted, epochs, evaluations, train_s, eval_s, startup_s,
        eval_speedup, eval_overhead_s, score_s,
    )  # fmt: skip


def read_benchmark(path: Path) -> dict:
    """The benchmark json; checks img_per_s and world_size."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ProjectionError(f"{path}: not a readable benchmark json ({e})") from None
    for key in ("img_per_s", "world_size", "batch_size"):
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ProjectionError(
                f"{path}: needs a positive number {key!r} (ssd-train --benchmark.json)"
            )
    return data


def table(rows: Sequence[Projection], bench: dict) -> str:
    """The projection table (markdown), one row per preset."""
    head = (
        "| preset | ranks x batch (global) | system img/s | epochs (expected) | evals "
        "| train min | eval min | start-up min | **projected min** | NVIDIA v0.7 min "
        "| img/s per rank for NVIDIA's time |\n"
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for p in rows:
        epochs = (
            f"{p.epochs} ({p.expected_epochs:.1f})" if p.epochs else f"> {p.preset.eval_epochs[-1]}"
        )
        total = f"**{p.total_minutes:.2f}**" if p.epochs else "not within max_epochs"
        nvidia = NVIDIA_V07_MINUTES.get(p.preset.name)
        needed = p.rate_per_rank_for(nvidia) if nvidia is not None else None
        lines.append(
            f"| {p.preset.name} | {p.preset.ranks} x {p.preset.batch_per_rank} "
            f"({p.preset.global_batch}) | {p.system_img_s:,.0f} | {epochs} | {p.evaluations} "
            f"| {p.train_s / 60:.2f} | {p.eval_s / 60:.2f} | {p.startup_s / 60:.2f} | {total} "
            f"| {nvidia if nvidia is not None else '—'} "
            f"| {f'{needed:,.0f}' if needed is not None else '—'} |"
        )
    extras = ", ".join(
        f"{k} {bench[k]}" for k in ("device", "precision", "compile_mode") if k in bench
    )
    lines.append(
        f"\nmeasured: {bench['img_per_s']:.1f} img/s on {bench['world_size']} rank(s) at batch "
        f"{bench['batch_size']} per rank" + (f" ({extras})" if extras else "")
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Project minutes to mAP 0.23 from a measured training-step rate.",
        epilog="The model and its sources are in this script's docstring.",
    )
    parser.add_argument("benchmark", type=Path, help="ssd-train --benchmark.json output")
    parser.add_argument(
        "--preset", action="append", required=True, help="infra/configs/<preset>.toml"
    )
    parser.add_argument("--configs", type=Path, default=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--scaling-efficiency", type=float, default=1.0)
    parser.add_argument("--eval-speedup", type=float, default=3.0)
    parser.add_argument("--eval-overhead-s", type=float, default=1.0)
    parser.add_argument("--score-s", type=float, default=10.0)
    parser.add_argument("--startup-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        bench = read_benchmark(args.benchmark)
        rows = []
        for name in args.preset:
            preset = load_preset(name, args.configs)
            if preset.batch_per_rank != bench["batch_size"]:
                print(
                    f"note: {name} trains at batch {preset.batch_per_rank} per rank, the benchmark "
                    f"measured batch {bench['batch_size']}: the rate is used as measured",
                    file=sys.stderr,
                )
            rows.append(
                project(
                    preset,
                    float(bench["img_per_s"]),
                    int(bench["world_size"]),
                    scaling_efficiency=args.scaling_efficiency,
                    eval_speedup=args.eval_speedup,
                    eval_overhead_s=args.eval_overhead_s,
                    score_s=args.score_s,
                    startup_s=args.startup_s,
                )
            )
    except ProjectionError as e:
        print(f"time_to_train: error: {e}", file=sys.stderr)
        return 2
    print(table(rows, bench))
    return 0 if all(r.epochs for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
