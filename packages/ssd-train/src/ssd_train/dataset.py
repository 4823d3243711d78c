"""Which dataset a run uses, and its class count: the configured one, or the default job's.

``uv run ssd-train`` with ``data.root`` unset generates (once) ``ssd_data``'s synthetic dataset
under ``synthetic.cache_dir/synthetic-<difficulty>-<train>-<val>-s<seed>-<categories>`` and
points ``data`` at it; the run then logs the open division. Either way ``model.num_classes`` comes
from one source, the validation json's categories (+ 1 for the background), before any model is
built; a ``model.num_classes`` setting is only checked against it. With torchrun, local rank 0 draws the images and the
other local ranks wait for its marker file. This happens before the MLPerf init phase: preparing
a dataset is not part of a timed run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ssd_data import (
    DataConfig,
    check_annotation_files,
    check_dataset_paths,
    generate_synthetic_coco,
)
from ssd_data.synthetic.generate import MARKER_NAME

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
        return with_dataset_classes(settings), False
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
    return with_dataset_classes(settings.model_copy(update={"data": new_data})), True


def dataset_num_classes(annotations: Path) -> int:
    """C of a COCO-format dataset: the categories its json lists, + 1 for the background."""
    from ssd_eval import GroundTruthError, read_json

    dataset = read_json(Path(annotations), GroundTruthError, "annotation file")
    categories = dataset.get("categories") if isinstance(dataset, dict) else None
    if not isinstance(categories, list) or not categories:
        raise GroundTruthError(
            f"{annotations}: no 'categories' list; a COCO-format json lists its categories"
        )
    return len(categories) + 1


def with_dataset_classes(settings: Settings) -> Settings:
    """``settings`` with ``model.num_classes`` from the validation json (the one source of C),
    after checking that every dataset folder and annotation file exists.

    Raises:
        DataError: a dataset folder or annotation file is missing.
        ValueError: ``model.num_classes`` was set and differs from the dataset's count.
    """
    check_dataset_paths(settings.data)
    annotations = settings.data.val_annotations
    assert annotations is not None  # checked just above
    found = dataset_num_classes(annotations)
    wanted = settings.model.num_classes
    if wanted is not None and wanted != found:
        raise DatasetClassesError(
            f"{annotations} lists {found - 1} categories (C = {found} with the background) but"
            f" model.num_classes = {wanted}: set --model.num-classes {found}, or leave it unset to"
            " take it from the dataset"
        )
    model = settings.model.model_copy(update={"num_classes": found})
    return settings.model_copy(update={"model": model})


class DatasetClassesError(ValueError):
    """The model's class count differs from the dataset's (an input error: exit 2)."""


def check_annotations_before_start(settings: Settings, *, synthetic: bool) -> None:
    """Parse both annotation files now, before the run folder and the model exist, when the run
    will log the open division: a broken file is then reported in seconds and leaves nothing
    behind (the parsed form is cached next to each json, so the loaders do not parse again).

    In the closed division MLPerf times data access from ``run_start``, so only the paths are
    checked before it (:func:`with_dataset_classes`); a parse error after ``run_start`` still ends
    the run with one message naming the file and the record.

    Raises:
        ssd_data.AnnotationError: a structural problem in either file.
        ValueError: ``logging.mlperf.division = closed`` with settings that cannot pass its rules.
    """
    from ssd_train.distributed import launched_world_size
    from ssd_train.run_setup import planned_division

    if planned_division(settings, launched_world_size(), synthetic_data=synthetic) == "open":
        check_annotation_files(settings.data)
