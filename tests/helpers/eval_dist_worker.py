"""Worker process for tests/eval/test_distributed.py: one gloo rank running several evaluation
scenarios.

Usage: python -m tests.helpers.eval_dist_worker RANK WORLD PORT OUT_DIR (from the repository
root). Writes OUT_DIR/rank<RANK>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GROUND_TRUTH = {"num_images": 60, "seed": 21, "num_categories": 8, "shuffle_categories": True}
DETECTIONS = {"seed": 21, "per_image": 20, "no_detection_fraction": 0.1}


def main() -> None:
    # Heavy imports live here: the scoring process (spawn) re-imports this script as its main
    # module, and should not pay for torch.
    import torch
    import torch.distributed as dist
    from ssd_eval.config import EvalConfig
    from ssd_eval.evaluator import CocoEvaluator, EvaluationError
    from ssd_eval.synthetic import make_detections

    from tests.helpers.coco_reference import file_order_labels, tensor_batches

    torch.set_num_threads(1)
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    gt = json.loads((out / "gt.json").read_text())
    rows = make_detections(gt, **DETECTIONS)
    image_ids = [im["id"] for im in gt["images"]]
    shard = image_ids[rank::world]  # disjoint, interleaved, uneven sizes are fine
    report: dict[str, object] = {}
    evaluator = CocoEvaluator(
        out / "gt.json", EvalConfig(asynchronous=False), label_to_category_id=file_order_labels(gt)
    )

    batches, _ = tensor_batches(gt, rows, batch_size=7, image_ids=shard)
    for batch in batches:
        evaluator.add(*batch)
    result = evaluator.evaluate(epoch=5)
    report["sync"] = {"stats": result.stats, "epoch": result.epoch}

    # Rank 1 contributes nothing at all: still works.
    if rank == 0:
        for batch in tensor_batches(gt, rows, batch_size=9)[0]:
            evaluator.add(*batch)
    result = evaluator.evaluate(epoch=6)
    report["one_rank_empty"] = {"stats": result.stats, "epoch": result.epoch}

    # Bad label on rank 1 only: every rank raises, nobody hangs.
    for batch in batches:
        ids, boxes, scores, labels, counts = batch
        if rank == 1:
            labels = labels.clone()
            labels[0, 0] = 99
            counts = counts.clone()
            counts[0] = max(int(counts[0]), 1)
        evaluator.add(ids, boxes, scores, labels, counts)
    try:
        evaluator.evaluate(epoch=7)
        report["bad_label"] = "no error"
    except EvaluationError as error:
        report["bad_label"] = str(error)

    # The same image on both ranks (a padded sampler): every rank raises.
    evaluator.add(*tensor_batches(gt, rows, batch_size=1, image_ids=[image_ids[0]])[0][0])
    try:
        evaluator.evaluate(epoch=8)
        report["duplicate"] = "no error"
    except EvaluationError as error:
        report["duplicate"] = str(error)

    # Asynchronous: rank 0 scores in its worker process; poll() shares the result with all ranks.
    for batch in batches:
        evaluator.add(*batch)
    returned = evaluator.evaluate(epoch=9, asynchronous=True)
    polled = evaluator.poll(wait=True)
    report["async"] = {
        "returned": returned,
        "polled": [{"stats": r.stats, "epoch": r.epoch} for r in polled],
    }
    evaluator.close()
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
