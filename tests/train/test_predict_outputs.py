"""`ssd-predict` outputs and hostile images: --out checked before the model loads (exit 2), write
failures (exit 4), an image whose header claims 60,000 x 60,000 pixels skipped by name."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from ssd_train.predict.cli import main

from tests.helpers.predict import export_random_model, good_and_bad_images, synthetic_val_set


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_val_set(tmp_path_factory.mktemp("syn"), images=2)


@pytest.fixture(scope="module")
def weights(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_random_model(dataset, tmp_path_factory.mktemp("w") / "best.pt", topk=20)


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("ssd-predict: error:") == 1 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("export", [None, "onnx"])
def test_an_out_folder_that_cannot_be_made_is_refused_before_the_model_loads(
    export: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    garbage = tmp_path / "garbage.pt"  # loading it would fail: the --out check must come first
    garbage.write_bytes(b"not weights")
    out = blocker / "sub" / ("model.onnx" if export else "preds")
    argv = ["--weights", str(garbage), "--out", str(out), "--device", "cpu"]
    argv += ["--export", export] if export else [str(tmp_path)]
    assert main(argv) == 2
    last = _one_error(capsys)
    folder = out.parent if export else out
    assert last.startswith(f"ssd-predict: error: --out {out}: cannot create the folder {folder}:")
    assert "Not a directory" in last and "choose another --out" in last


def test_a_bomb_is_skipped_by_name_and_the_rest_predicted(
    dataset: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, good = good_and_bad_images(dataset, tmp_path / "imgs", "bomb.jpg", None)
    rc = main(["--weights", str(weights), str(folder), "--out", str(tmp_path / "o"),
               "--device", "cpu", "--no-draw"])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert "1 unreadable images skipped" in captured.out
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipped {folder / 'bomb.jpg'}: ")
    assert "data.max_image_pixels" in skipped[0]
    records = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert {r["file_name"] for r in records} <= {good.name}


def test_a_full_disk_while_writing_predictions_exits_4(
    dataset: Path, weights: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ssd_train.checkpoint.files.os.fsync", full)
    out = tmp_path / "o"
    good = sorted((dataset / "val2017").glob("*.jpg"))[0]
    rc = main(["--weights", str(weights), str(good), "--out", str(out), "--device", "cpu",
               "--no-draw"])  # fmt: skip
    assert rc == 4
    last = _one_error(capsys)
    assert last.startswith(
        f"ssd-predict: error: cannot write predictions file {out / 'predictions.json'}:"
        " No space left on device"
    )
    assert sorted(p.name for p in out.iterdir()) == []  # no half file, no temporary file


def test_a_full_disk_while_exporting_exits_4_and_leaves_no_file(
    weights: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ssd_train.predict.export.os.replace", full)  # the file is written first
    out = tmp_path / "models" / "ssd300.pt2"
    assert main(["--weights", str(weights), "--export", "pt2", "--out", str(out)]) == 4
    last = _one_error(capsys)
    assert last.startswith(
        f"ssd-predict: error: cannot write pt2 export {out}: No space left on device"
    )
    assert "it needs about" in last
    assert list(out.parent.iterdir()) == []  # neither the export nor its temporary file
