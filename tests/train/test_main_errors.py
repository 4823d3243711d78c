"""`ssd-train` reports bad input as one clear message and exit code 2, not a traceback."""

from __future__ import annotations

from pathlib import Path

from ssd_data.synthetic import generate_synthetic_coco
from ssd_train.__main__ import main


def test_dataset_smaller_than_a_batch_is_one_message(tmp_path: Path, capsys) -> None:
    root = generate_synthetic_coco(
        tmp_path / "syn", train_images=2, val_images=2, seed=0, categories="used"
    )
    code = main(
        [
            f"--run-dir={tmp_path / 'run'}",
            f"--data.root={root}",
            "--data.batch-size=8",
            "--data.num-workers=0",
            "--model.num-classes=11",
            "--model.backbone-weights=none",
            "--compile=false",
            "--checkpoint.enabled=false",
            "--logging.mlperf.echo-stdout=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "instances_train2017.json" in err and "lower data.batch_size" in err
    assert "Traceback" not in err


def test_missing_image_folder_is_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    code = main(
        [
            f"--run-dir={tmp_path / 'run'}",
            f"--data.root={tmp_path / 'coco'}",
            "--model.backbone-weights=none",
            "--compile=false",
            "--checkpoint.enabled=false",
            "--logging.mlperf.echo-stdout=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "coco/train2017 is not a folder" in err and "data.root" in err
    assert "Traceback" not in err
