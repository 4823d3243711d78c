"""`ssd-train` reports bad input as one clear message and exit code 2, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from ssd_data.synthetic.generate import generate_synthetic_coco
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


def _break_train_annotations(root: Path) -> Path:
    """An annotation naming an image id that the file does not list (a structural error)."""
    path = root / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["image_id"] = 987654321
    path.write_text(json.dumps(data))
    return path


def test_broken_train_annotations_fail_before_the_run_folder_and_model(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """Open division: the training json is parsed before anything is built, so the run folder
    never appears and the model is never built; one message names the file and the record."""
    import ssd_train.trainer as trainer

    root = generate_synthetic_coco(
        tmp_path / "syn", train_images=4, val_images=2, seed=0, categories="used"
    )
    path = _break_train_annotations(root)
    built: list[int] = []
    monkeypatch.setattr(trainer, "build_components", lambda *a, **k: built.append(1))
    run = tmp_path / "run"
    code = main([f"--run-dir={run}", f"--data.root={root}", "--data.num-workers=0",
                 "--model.backbone-weights=none", "--logging.mlperf.division=open"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(path) in err and "987654321" in err and "Traceback" not in err
    assert not run.exists() and built == []


def test_closed_division_the_settings_cannot_pass_is_one_message(tmp_path: Path, capsys) -> None:
    root = generate_synthetic_coco(
        tmp_path / "syn", train_images=4, val_images=2, seed=0, categories="used"
    )
    run = tmp_path / "run"
    code = main([f"--run-dir={run}", f"--data.root={root}", "--model.backbone-weights=none",
                 "--logging.mlperf.division=closed", "--schedule.warmup-iterations=0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "division=closed" in err and "Traceback" not in err and not run.exists()
