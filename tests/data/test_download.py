"""Tests of ssd_data.download against a local HTTP server on 127.0.0.1 serving small zips."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from ssd_data import download as dl
from ssd_data.download import Archive, ChecksumError, DownloadError, LayoutError

from tests.helpers.download_server import FileServer


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


# Incompressible payloads so that the zips are a few hundred KB and a transfer can be cut midway.
CONTENT = {
    "annotations/instances_train2017.json": b'{"images": [], "annotations": [], "categories": []}',
    "annotations/instances_val2017.json": b'{"images": [], "annotations": [], "categories": [1]}',
    "val2017/000000000002.jpg": os.urandom(50_000),
    "train2017/000000000001.jpg": os.urandom(300_000),
    "train2017/000000000003.jpg": os.urandom(10_000),
}
ZIPS = {
    "annotations/annotations_trainval2017.zip": _zip(
        {k: v for k, v in CONTENT.items() if k.startswith("annotations/")}
    ),
    "zips/val2017.zip": _zip({k: v for k, v in CONTENT.items() if k.startswith("val2017/")}),
    "zips/train2017.zip": _zip({k: v for k, v in CONTENT.items() if k.startswith("train2017/")}),
}


def _manifest(md5_override: dict[str, str] | None = None) -> tuple[Archive, ...]:
    md5_override = md5_override or {}
    provides = {
        "annotations_trainval2017.zip": (
            "annotations/instances_train2017.json",
            "annotations/instances_val2017.json",
        ),
        "val2017.zip": ("val2017",),
        "train2017.zip": ("train2017",),
    }
    out = []
    for url_path, data in ZIPS.items():
        name = url_path.rsplit("/", 1)[1]
        md5 = md5_override.get(name, hashlib.md5(data).hexdigest())
        out.append(Archive(name, url_path, len(data), md5, provides[name]))
    return tuple(out)


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer({"/" + k: v for k, v in ZIPS.items()}) as s:
        yield s


def _assert_extracted(root: Path) -> None:
    for rel, data in CONTENT.items():
        assert (root / rel).read_bytes() == data, rel


def test_published_coco_2017_checksums() -> None:
    by_name = {a.name: a for a in dl.COCO_2017}
    assert by_name["train2017.zip"].md5 == "cced6f7f71b7629ddf16f17bbcfab6b2"
    assert by_name["val2017.zip"].md5 == "442b8da7639aecaf257c1dceb8ba8c80"
    assert by_name["annotations_trainval2017.zip"].md5 == "f4bbac642086de4f52a3fdda2de5fa2c"
    assert by_name["val2017.zip"].url_path == "zips/val2017.zip"
    assert (
        by_name["annotations_trainval2017.zip"].url_path
        == "annotations/annotations_trainval2017.zip"
    )
    assert dl.BACKBONE_URL == "https://download.pytorch.org/models/resnet34-b627a593.pth"
    assert (
        dl.BACKBONE_URL.endswith("/" + dl.BACKBONE_FILE)
        and dl.BACKBONE_SHA256_PREFIX in dl.BACKBONE_FILE
    )


def test_full_download_then_rerun_makes_no_request(server: FileServer, tmp_path: Path) -> None:
    root = dl.download_coco(tmp_path, base_url=server.url, archives=_manifest(), progress=False)
    assert root == tmp_path
    _assert_extracted(tmp_path)
    assert sorted(p for p, _ in server.requests) == sorted("/" + k for k in ZIPS)
    assert all(rng is None for _, rng in server.requests)
    assert not list(tmp_path.glob("*.part"))
    server.requests.clear()
    # Even with the server gone (unreachable base URL), a finished root needs nothing.
    dl.download_coco(tmp_path, base_url="http://127.0.0.1:9/", archives=_manifest(), progress=False)
    assert server.requests == []


def test_already_present_archives_are_verified_not_fetched(
    server: FileServer, tmp_path: Path
) -> None:
    for url_path, data in ZIPS.items():
        (tmp_path / url_path.rsplit("/", 1)[1]).write_bytes(data)
    dl.download_coco(
        tmp_path, base_url=server.url, archives=_manifest(), progress=False, remove_archives=True
    )
    assert server.requests == []
    _assert_extracted(tmp_path)
    assert not list(tmp_path.glob("*.zip"))


def test_interrupted_transfer_keeps_part_and_next_run_resumes_with_range(
    server: FileServer, tmp_path: Path
) -> None:
    server.cut_once["/zips/train2017.zip"] = 120_000
    with pytest.raises(
        DownloadError, match=r"train2017\.zip.*re-run the same command to resume\."
    ) as err:
        dl.download_coco(
            tmp_path, base_url=server.url, archives=_manifest(), progress=False, retries=0
        )
    part = tmp_path / "train2017.zip.part"
    assert str(part) in str(err.value)
    assert part.stat().st_size == 120_000
    assert part.read_bytes() == ZIPS["zips/train2017.zip"][:120_000]
    server.requests.clear()
    dl.download_coco(tmp_path, base_url=server.url, archives=_manifest(), progress=False, retries=0)
    # The finished archives are not fetched again; train2017 resumes where it stopped.
    assert server.requests == [("/zips/train2017.zip", "bytes=120000-")]
    assert not part.exists()
    _assert_extracted(tmp_path)


def test_dropped_connection_is_retried_within_one_run(server: FileServer, tmp_path: Path) -> None:
    server.cut_once["/zips/val2017.zip"] = 7_000
    dl.download_coco(tmp_path, base_url=server.url, archives=_manifest(), progress=False, retries=2)
    val = [rng for p, rng in server.requests if p == "/zips/val2017.zip"]
    assert val == [None, "bytes=7000-"]
    _assert_extracted(tmp_path)


def test_server_ignoring_range_restarts_the_file(server: FileServer, tmp_path: Path) -> None:
    (tmp_path / "val2017.zip.part").write_bytes(b"garbage that a 200 reply must replace")
    server.ignore_range = True
    dl.download_coco(tmp_path, base_url=server.url, archives=_manifest(), progress=False)
    _assert_extracted(tmp_path)


def test_bad_checksum_removes_the_file(server: FileServer, tmp_path: Path) -> None:
    manifest = _manifest({"val2017.zip": "0" * 32})
    with pytest.raises(
        ChecksumError, match=r"val2017\.zip.*MD5 .* expected 0{32}.*removed.*Re-run"
    ):
        dl.download_coco(tmp_path, base_url=server.url, archives=manifest, progress=False)
    assert not (tmp_path / "val2017.zip").exists() and not (tmp_path / "val2017.zip.part").exists()
    assert not (tmp_path / "val2017").exists()


def test_wrong_size_is_a_checksum_error(server: FileServer, tmp_path: Path) -> None:
    (a, v, t) = _manifest()
    bad = Archive(v.name, v.url_path, v.size + 1, v.md5, v.provides)
    with pytest.raises(ChecksumError, match="size"):
        dl.download_coco(
            tmp_path, base_url=server.url, archives=(a, bad, t), progress=False, retries=0
        )


def test_http_404_and_unreachable_host_name_the_url(server: FileServer, tmp_path: Path) -> None:
    missing = (Archive("x.zip", "zips/x.zip", None, None, ()),)
    with pytest.raises(DownloadError, match=r"zips/x\.zip failed: HTTP 404.*--base-url"):
        dl.download_coco(tmp_path, base_url=server.url, archives=missing, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    with pytest.raises(
        DownloadError,
        match=rf"127\.0\.0\.1:{port}/annotations/annotations_trainval2017\.zip failed after 2 attempts.*ConnectionRefused.*--base-url",
    ):
        dl.download_coco(
            tmp_path,
            base_url=f"http://127.0.0.1:{port}",
            archives=_manifest(),
            progress=False,
            retries=1,
        )


def test_archive_without_expected_content_is_a_layout_error(
    server: FileServer, tmp_path: Path
) -> None:
    (a, v, t) = _manifest()
    wrong = Archive(v.name, v.url_path, v.size, v.md5, ("val2017", "val2017/000000999999.jpg"))
    with pytest.raises(LayoutError, match=r"did not contain val2017/000000999999\.jpg"):
        dl.download_coco(tmp_path, base_url=server.url, archives=(a, wrong, t), progress=False)


def test_final_layout_check_names_missing_paths(server: FileServer, tmp_path: Path) -> None:
    (a, v, _t) = _manifest()
    with pytest.raises(LayoutError, match=r"lacks train2017 "):
        dl.download_coco(tmp_path, base_url=server.url, archives=(a, v), progress=False)
    dl.check_layout(tmp_path, ("val2017", "annotations/instances_val2017.json"))


def _weights_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.arange(12.0).reshape(1, 3, 2, 2)}, buf)
    return buf.getvalue()


def test_backbone_download_into_torch_hub_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    data = _weights_bytes()
    name = f"resnet34-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    with FileServer({"/models/" + name: data, "/models/resnet34-deadbeef.pth": data}) as srv:
        path = dl.download_backbone(srv.url + "models/" + name, progress=False)
        assert path == tmp_path / "torch" / "hub" / "checkpoints" / name
        sd = torch.load(path, weights_only=True)
        assert torch.equal(sd["conv1.weight"], torch.arange(12.0).reshape(1, 3, 2, 2))
        srv.requests.clear()
        assert dl.download_backbone(srv.url + "models/" + name, progress=False) == path
        assert srv.requests == []  # present and valid: no request
        with pytest.raises(
            ChecksumError,
            match=r"resnet34-deadbeef\.pth.*expected one starting with deadbeef.*removed",
        ):
            dl.download_backbone(srv.url + "models/resnet34-deadbeef.pth", progress=False)
        assert not (path.parent / "resnet34-deadbeef.pth").exists()
    with pytest.raises(DownloadError, match=r"no '-<sha256 prefix>\.' part"):
        dl.download_backbone("http://127.0.0.1:9/models/weights.pth", progress=False)


def test_manifest_file_round_trip_and_errors(tmp_path: Path) -> None:
    import json

    good = tmp_path / "m.json"
    good.write_text(
        json.dumps(
            [{"name": "a.zip", "url_path": "z/a.zip", "size": 3, "md5": None, "provides": ["a"]}]
        )
    )
    assert dl.load_manifest(good) == (Archive("a.zip", "z/a.zip", 3, None, ("a",)),)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"url_path": "z"}]')
    with pytest.raises(DownloadError, match=r"bad\.json is unreadable or malformed"):
        dl.load_manifest(bad)
