"""The default job: with no dataset configured, train on a cached synthetic COCO-format dataset.

``uv run ssd-train`` with ``data.root`` unset generates (once) ``ssd_data``'s synthetic dataset
under ``synthetic.cache_dir/synthetic-<difficulty>-<train>-<val>-s<seed>-<categories>`` and
points ``data`` at it, with ``model.num_classes`` set to the categories the jsons list + 1; the run
then logs the open division. With torchrun, local rank 0 draws the images and the
other local ranks wait for its marker file. This happens before the MLPerf init phase: preparing
a dataset is not part of a timed run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ssd_data.config import DataConfig
from ssd_data.synthetic import MARKER_NAME, generate_synthetic_coco
from ssd_data.synthetic_presets import resolve_difficulty

from ssd_train.settings import Settings

_WAIT_S = 3600.0


def synthetic_root(settings: Settings) -> Path:
    """The cache folder of the synthetic dataset these settings ask for."""
    syn = settings.synthetic
    name = f"synthetic-{syn.difficulty}-{syn.train_images}-{syn.val_images}-s{syn.seed}-{syn.categories}"
    return Path(syn.cache_dir).expanduser() / name


def prepare_dataset(settings: Settings, *, progress: bool = True) -> tuple[Settings, bool]:
    """Settings with ``data`` pointing at a dataset, and whether it is the synthetic one.

    A configured ``data.root`` (or explicit annotation paths) is returned unchanged; otherwise the
    synthetic dataset is generated or reused.
    """
    data = settings.data
    if data.root is not None or data.train_annotations is not None:
        return settings, False
    root = synthetic_root(settings)
    syn = settings.synthetic
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        if progress and not (root / MARKER_NAME).exists():
            print(
                f"generating the synthetic dataset ({syn.difficulty}, {syn.train_images} train +"
                f" {syn.val_images} val images) in {root} ...",
                flush=True,
            )
        generate_synthetic_coco(
            root,
            train_images=syn.train_images,
            val_images=syn.val_images,
            seed=syn.seed,
            difficulty=syn.difficulty,
            categories=syn.categories,
            progress=progress,
        )
    else:
        deadline = time.monotonic() + _WAIT_S
        while not (root / MARKER_NAME).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"local rank 0 did not finish the synthetic dataset in {root}")
            time.sleep(1.0)
    new_data = DataConfig.model_validate({**data.model_dump(exclude={"root"}), "root": root})
    num_classes = synthetic_num_classes(syn.difficulty, syn.categories)
    model = settings.model.model_copy(update={"num_classes": num_classes})
    return settings.model_copy(update={"data": new_data, "model": model}), True


def synthetic_num_classes(difficulty: str, categories: str) -> int:
    """C of the synthetic dataset: the categories its jsons list, + 1 for the background."""
    return 81 if categories == "all" else len(resolve_difficulty(difficulty).category_ids) + 1
