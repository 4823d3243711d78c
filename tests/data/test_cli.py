"""Tests of the ``ssd-data`` command line (ssd_data.cli): synth, download, bench dispatch."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import types
import zipfile
from pathlib import Path

import pytest
from ssd_data.cli import main

from tests.helpers.download_server import FileServer


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("synth", "download", "bench"))
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    out = capsys.readouterr().out
    assert "--difficulty" in out and "hard" in out and "--train-images" in out


def test_synth_writes_a_dataset_and_rerun_is_a_noop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "synth",
        "--out",
        str(tmp_path / "ds"),
        "--train-images",
        "5",
        "--val-images",
        "3",
        "--seed",
        "4",
    ]
    argv += ["--difficulty", "medium", "--quiet", "--workers", "1"]
    assert main(argv) == 0
    assert "ready in" in capsys.readouterr().out
    ds = tmp_path / "ds"
    train = json.loads((ds / "annotations" / "instances_train2017.json").read_text())
    assert len(train["images"]) == 5 and len(list((ds / "val2017").glob("*.jpg"))) == 3
    marker = json.loads((ds / "synthetic_coco.json").read_text())
    assert marker["seed"] == 4 and marker["difficulty"]["name"] == "medium"
    stamps = {p: p.stat().st_mtime_ns for p in ds.rglob("*")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in ds.rglob("*")} == stamps


def test_synth_errors_are_messages_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "annotations").mkdir()
    assert main(["synth", "--out", str(tmp_path), "--train-images", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ssd-data synth: error:") and "marker" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path), "--difficulty", "extreme"])
    assert exc.value.code == 2


def _served_dataset(tmp_path: Path) -> tuple[dict[str, bytes], Path]:
    entries = {
        "annotations/annotations_trainval2017.zip": {
            "annotations/instances_train2017.json": b"{}",
            "annotations/instances_val2017.json": b"{}",
        },
        "zips/val2017.zip": {"val2017/000000000002.jpg": b"v" * 5000},
        "zips/train2017.zip": {"train2017/000000000001.jpg": b"t" * 9000},
    }
    files, manifest = {}, []
    for url_path, members in entries.items():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        data = buf.getvalue()
        files["/" + url_path] = data
        provides = sorted(
            {m.split("/")[0] if not m.startswith("annotations/") else m for m in members}
        )
        manifest.append(
            {"name": url_path.rsplit("/", 1)[1], "url_path": url_path, "size": len(data),
             "md5": hashlib.md5(data).hexdigest(), "provides": provides}
        )  # fmt: skip
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return files, path


def test_download_against_local_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files, manifest = _served_dataset(tmp_path)
    root = tmp_path / "coco"
    with FileServer(files) as srv:
        argv = [
            "download",
            "--root",
            str(root),
            "--base-url",
            srv.url,
            "--manifest",
            str(manifest),
            "--quiet",
        ]
        assert main(argv) == 0
        assert (root / "train2017" / "000000000001.jpg").read_bytes() == b"t" * 9000
        assert (root / "annotations" / "instances_val2017.json").read_bytes() == b"{}"
        assert f"COCO 2017 ready in {root}" in capsys.readouterr().out
        n = len(srv.requests)
        assert n == 3
        assert main(argv) == 0
        assert len(srv.requests) == n  # re-run: no request
        (root / ".ssd-data" / "train2017.zip.done").unlink()
        (root / "train2017.zip").write_bytes(b"corrupt")
        assert main([*argv, "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("ssd-data download: error:") and "train2017.zip" in err and "removed" in err
    )
    assert "Traceback" not in err


def test_download_network_error_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest = _served_dataset(tmp_path)
    argv = ["download", "--root", str(tmp_path / "c"), "--base-url", "http://127.0.0.1:9/"]
    assert main([*argv, "--manifest", str(manifest), "--retries", "0", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9/annotations/annotations_trainval2017.zip failed" in err
    assert "Check the network" in err


def test_download_backbone_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    data = b"not really weights, but hashed"
    name = f"resnet34-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    with FileServer({"/m/" + name: data}) as srv:
        argv = [
            "download",
            "--no-dataset",
            "--backbone",
            "--backbone-url",
            srv.url + "m/" + name,
            "--quiet",
        ]
        assert main(argv) == 0
    assert (tmp_path / "th" / "hub" / "checkpoints" / name).read_bytes() == data
    assert "backbone weights ready" in capsys.readouterr().out


def test_download_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["download"], ["download", "--no-dataset"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--root DIR is required" in err and "nothing to do" in err


def test_bench_dispatches_to_ssd_data_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("ssd_data.bench.cli")
    fake.main = lambda argv: seen.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ssd_data.bench.cli", fake)
    assert main(["bench", "--images", "64", "--workers", "2"]) == 0
    assert seen == [["--images", "64", "--workers", "2"]]


def test_bench_missing_module_is_explained(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        sys.modules, "ssd_data.bench.cli", None
    )  # makes the import fail as if absent
    assert main(["bench"]) == 2
    assert "ssd_data.bench.cli is not available" in capsys.readouterr().err


def test_python_m_ssd_data(tmp_path: Path) -> None:
    import subprocess

    res = subprocess.run(
        [sys.executable, "-m", "ssd_data", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and "synth" in res.stdout
