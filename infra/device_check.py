"""The prepared device check behind ``infra/device_check.sh``: one table of train-step, input-pipeline
and evaluation numbers, within 8 minutes, with nothing from the network.

First the preflight (``infra/device_preflight.py``, under 30 s): if anything the rows need is
missing, the check stops there with one line (exit 4). Then the rows, each in its own process (so
Dynamo counters and peak memory are per row) and each with its own time cap:
* train step at batch 256, then 114: ``ssd-train --mode benchmark --benchmark.json``, eager
  (cap 60 s) / compiled (``--compile-mode default``, cap 180 s; at batch 256 it also writes a
  ``torch.profiler`` trace of 10 compiled steps) / CUDA graphs (``reduce-overhead``, cap 180 s;
  CUDA only), bf16 on CUDA, with ops and host syncs per step and CUDA-graph skips;
* input pipeline: ``ssd-data bench --json`` (cpu-fast with the machine's workers vs the device
  path);
* evaluation: inference + NMS (``PostProcessor``) + COCO scoring of synthetic val images, seconds.
The batch-256 rows come first; time for the input pipeline and the evaluation is held back until
they have run; the batch-114 rows get what is left.

The output folder (``--out``; default ``runs/device_check-<UTC time>``) receives ``table.txt``,
``benchmarks.json`` (every row's benchmark JSON, the input pipeline's and the evaluation's) and
``trace_b256_compiled.json.gz`` (Chrome/Perfetto). A row that fails or runs out of time is shown as
such; the check still exits 0 (the table is the result). ``--tiny`` shrinks everything for a CPU
smoke run (batch 2), whose compiled row uses the ``eager`` backend (the same Dynamo graphs and
breaks, without Inductor's kernel generation).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
EAGER_CAP_S, COMPILED_CAP_S = 60.0, 180.0


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` in a new session: on a timeout the child's whole process group (its
    loader workers included) is killed before ``TimeoutExpired`` is raised, so nothing outlives
    the check."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, start_new_session=True) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _train_row(
    batch: int, mode: str, args: argparse.Namespace, timeout: float, results: dict
) -> list[str]:
    """One ``--mode benchmark`` process; returns the table cells and keeps its JSON in
    ``results``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "ssd_train", "--mode", "benchmark",
               "--data.batch-size", str(batch), "--model.backbone-weights", "none",
               "--precision", args.precision, "--benchmark.json", str(out),
               "--benchmark.warmup-steps", str(args.warmup), "--benchmark.timed-steps", str(args.timed),
               "--compile", "false" if mode == "eager" else "true",
               "--run-dir", str(Path(tmp) / "run")]  # fmt: skip
        if mode != "eager":
            cmd += ["--compile-mode", mode]
        if mode != "eager" and args.tiny:
            # the smoke run checks the compiled regions' graphs and breaks, which are Dynamo's
            # whatever the backend: the eager backend runs the captured graphs as they are
            # (Inductor's kernel generation takes ~4.5 CPU-minutes here, aot_eager's tracing ~1.5)
            cmd += ["--compile-backend", "eager"]
        if args.threads:
            cmd += ["--num-threads", str(args.threads)]
        if mode == "default" and batch == args.trace_batch:
            cmd += ["--benchmark.trace", str(args.out / f"trace_b{batch}_compiled.json.gz"),
                    "--benchmark.trace-steps", str(args.trace_steps)]  # fmt: skip
        start = time.perf_counter()
        try:
            proc = _run(cmd, timeout)
        except subprocess.TimeoutExpired:
            return [f"timeout after {timeout:.0f} s", "", "", ""]
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            return [f"failed (exit {proc.returncode}): {tail[0][:80]}", "", "", ""]
        r = json.loads(out.read_text())
        results[f"train b={batch} {mode}"] = r
        mem = f"{r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['peak_memory_kind']})"
        graphs = (
            f"{r['graphs']} graphs / {r['graph_breaks']} breaks / {r['recompiles']} recompiles;"
            f" {r['ops_per_step']} ops / {r['syncs_per_step']} syncs per step;"
            f" {r['cudagraph_skips']} cudagraph skips"
        )
        return [
            f"{r['img_per_s']:.1f} img/s ({r['step_ms']:.1f} ms/step)",
            mem,
            graphs,
            f"{wall:.0f} s",
        ]


def _data_row(args: argparse.Namespace, timeout: float, results: dict) -> list[list[str]]:
    """The ``ssd-data bench --json`` pipelines (cpu-fast and the device path) as table rows."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data.json"
        cmd = [sys.executable, "-m", "ssd_data", "bench", "--images", str(args.data_images),
               "--workers", str(args.workers), "--no-baseline", "--fidelity", "0", "--json", str(out)]  # fmt: skip
        try:
            proc = _run(cmd, timeout)
        except subprocess.TimeoutExpired:
            return [["input pipeline", f"timeout after {timeout:.0f} s", "", "", ""]]
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            return [["input pipeline", f"failed: {tail[0][:80]}", "", "", ""]]
        data = json.loads(out.read_text())
    results["input pipeline"] = data
    return [_pipeline_row(r) for r in data.get("pipelines", [])]


def _pipeline_row(r: dict) -> list[str]:
    """One ``ssd-data bench --json`` pipeline as a table row."""

    def ms(key: str) -> str:
        value = r.get(key)
        return "-" if value is None else f"{value:.1f} ms/img"

    label = f"input {r['name']} ({r['workers']} {r['worker_type']} workers)"
    return [label, f"{r['img_per_s']:.0f} img/s", f"host CPU {ms('host_cpu_ms_per_img')}",
            f"device {ms('device_ms_per_img')}", ""]  # fmt: skip


def _eval_row(args: argparse.Namespace) -> list[str]:
    """Inference + NMS + COCO scoring of ``args.eval_images`` synthetic val images, in process."""
    import torch
    from ssd_core import ModelConfig, build_detector
    from ssd_data import label_to_category_id
    from ssd_eval import EvalConfig
    from ssd_eval.synthetic import make_ground_truth
    from ssd_train.validation import Evaluation

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gt = make_ground_truth(args.eval_images, seed=0)
    ids = [img["id"] for img in gt["images"]]
    gen = torch.Generator().manual_seed(0)
    n = args.eval_batch
    images = torch.randint(0, 256, (n, 3, 300, 300), dtype=torch.uint8, generator=gen).to(device)
    batches = [
        SimpleNamespace(
            images=images[: len(ids[i : i + n])], image_ids=torch.tensor(ids[i : i + n])
        )
        for i in range(0, len(ids), n)
    ]

    class Loader:
        """What ``Evaluation`` reads: ``num_samples``, the label map (``index``) and batches of
        images + image ids."""

        num_samples = len(ids)
        index = SimpleNamespace(label_to_category_id=label_to_category_id(gt["categories"]))

        def __iter__(self) -> object:
            return iter(batches)

    detector = build_detector(ModelConfig(num_classes=81, backbone_weights=None))
    model = detector.model.to(device=device, memory_format=torch.channels_last)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    ev = Evaluation(Loader(), gt, detector.postprocessor, EvalConfig(asynchronous=False),  # type: ignore[arg-type]
                    device=device, autocast_dtype=autocast, channels_last=True)  # fmt: skip
    start = time.perf_counter()
    ev.infer(model)
    if device.type == "cuda":
        torch.cuda.synchronize()
    infer_s = time.perf_counter() - start
    result = ev.evaluator.evaluate(1, asynchronous=False)
    total_s = time.perf_counter() - start
    ev.close()
    return [f"{total_s:.1f} s total", f"inference+NMS {infer_s:.1f} s",
            f"gather+scoring {total_s - infer_s:.1f} s", f"mAP {result.stats[0]:.4f} (random weights)"]  # fmt: skip


def _eval_cells(args: argparse.Namespace, deadline: float) -> list[str]:
    """:func:`_eval_row` in a child process, stopped at the deadline (at least 20 s)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--eval-row"]
    if args.tiny:
        cmd.append("--tiny")
    timeout = max(20.0, deadline - time.monotonic())
    try:
        proc = _run(cmd, timeout)
    except subprocess.TimeoutExpired:
        return [f"timeout after {timeout:.0f} s", "", "", ""]
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0 or not last.startswith("["):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return [f"failed (exit {proc.returncode}): {tail[0][:80]}", "", "", ""]
    return json.loads(last)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tiny",
        action="store_true",
        help="CPU smoke run: batch 2, few steps, 8 val images, compiled row with the eager backend",
    )
    p.add_argument(
        "--preflight",
        action="store_true",
        help="only the preflight (imports, requirements, C compiler, a tiny torch.compile): < 30 s",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole check (default 440; tiny 360)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (runs/device_check-<UTC>)")
    p.add_argument("--eval-row", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    start = time.monotonic()
    if not args.eval_row:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from device_preflight import run_preflight

        code = run_preflight()
        if code != 0 or args.preflight:
            return code
    import torch

    cuda = torch.cuda.is_available()
    tiny = args.tiny
    args.precision = "bf16" if cuda else "fp32"
    args.warmup, args.timed = (2, 1) if tiny else (5, 20)
    args.threads = 2 if tiny else None
    args.workers = 2 if tiny else 16
    args.data_images = 64 if tiny else 2048
    args.eval_images, args.eval_batch = (8, 4) if tiny else (5000, 250)
    args.trace_batch, args.trace_steps = (2, 1) if tiny else (256, 10)
    if args.eval_row:  # the child process of _eval_cells
        print(json.dumps(_eval_row(args)))
        return 0
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    args.out = (args.out or ROOT / "runs" / f"device_check-{stamp}").resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    budget = args.budget or (360.0 if tiny else 440.0)
    deadline = start + budget
    data_s, eval_s = (90.0, 30.0) if tiny else (60.0, 60.0)
    modes = ["eager", "default"] + ([] if tiny or not cuda else ["reduce-overhead"])
    results: dict[str, object] = {}
    rows: list[list[str]] = []

    def train(batch: int, reserve: float) -> None:
        """The rows of one batch size, each capped, keeping ``reserve`` seconds for later rows."""
        for m in modes:
            cap = EAGER_CAP_S if m == "eager" else COMPILED_CAP_S
            left = min(cap, deadline - time.monotonic() - reserve)
            if left < (20 if tiny else 30):
                rows.append([f"train step b={batch} {m}", "skipped: time budget spent", "", "", ""])
                continue
            print(f"device_check: train step batch {batch}, {m} (cap {left:.0f} s) ...", flush=True)
            rows.append([f"train step b={batch} {m}", *_train_row(batch, m, args, left, results)])

    # batch 256 (the goal's) first; the input pipeline and evaluation keep their time; then 114
    train(2 if tiny else 256, reserve=data_s + eval_s)
    print("device_check: input pipeline ...", flush=True)
    data_rows = _data_row(args, min(data_s, max(20.0, deadline - time.monotonic())), results)
    print(f"device_check: evaluation of {args.eval_images} synthetic val images ...", flush=True)
    eval_deadline = time.monotonic() + min(eval_s, max(20.0, deadline - time.monotonic()))
    eval_cells = _eval_cells(args, eval_deadline)
    results["evaluation"] = eval_cells
    if not tiny:
        train(114, reserve=0.0)
    rows += [*data_rows, [f"evaluation {args.eval_images} images", *eval_cells]]
    device = torch.cuda.get_device_name() if cuda else "cpu"
    lines = [f"device check: {device}, torch {torch.__version__}, precision {args.precision}, "
             f"{'tiny' if tiny else 'full'} run, {time.monotonic() - start:.0f} s"]  # fmt: skip
    head = ["row", "throughput / result", "peak memory / detail", "graphs / detail", "wall"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for r in [head, ["-" * w for w in widths], *rows]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print("\n" + "\n".join(lines), flush=True)
    (args.out / "table.txt").write_text("\n".join(lines) + "\n")
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"device_check: table, benchmark JSONs and trace in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
