"""COCO 2017 and ResNet-34 backbone downloader (``ssd-data download``), stdlib urllib only.

``download_coco(root)`` fetches train2017.zip, val2017.zip and annotations_trainval2017.zip from
the official host (``--base-url`` overrides it) into ``root``, with a tqdm progress bar, resume of
partial files (``<name>.part`` + HTTP Range), size and MD5 verification, extraction, and a final
check of the layout the trainer reads::

    root/train2017/*.jpg  root/val2017/*.jpg  root/annotations/instances_{train,val}2017.json

Each archive that was verified and extracted leaves a stamp in ``root/.ssd-data/``; re-running
with the stamps and the layout in place makes no request at all. ``download_backbone()`` puts
torchvision's ImageNet ResNet-34 weights into ``torch.hub.get_dir()/checkpoints/`` and checks the
sha256 prefix in their file name, as ``torch.hub`` does.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_URL = "http://images.cocodataset.org/"
#: torchvision's ImageNet ResNet-34 (IMAGENET1K_V1); the name carries the sha256 prefix.
BACKBONE_URL = "https://download.pytorch.org/models/resnet34-b627a593.pth"
BACKBONE_FILE = "resnet34-b627a593.pth"
BACKBONE_SHA256_PREFIX = "b627a593"
#: Paths the trainer reads below the dataset root.
COCO_LAYOUT: tuple[str, ...] = (
    "train2017",
    "val2017",
    "annotations/instances_train2017.json",
    "annotations/instances_val2017.json",
)
STAMP_DIR = ".ssd-data"
_CHUNK = 1 << 20
_USER_AGENT = "ssd-data-downloader/0.1"


class DownloadError(RuntimeError):
    """A download, verification, extraction or layout problem, with what to do about it."""


class ChecksumError(DownloadError):
    """A file's size or hash is not the expected one (the file has been removed)."""


class LayoutError(DownloadError):
    """The dataset root lacks paths the trainer needs."""


@dataclass(frozen=True)
class Archive:
    """One archive of the manifest: ``url_path`` is relative to the base URL."""

    name: str
    url_path: str
    size: int | None
    md5: str | None
    provides: tuple[str, ...]  # paths below the root that exist once it is extracted


#: COCO 2017 (sizes and MD5s as published with the official zips).
COCO_2017: tuple[Archive, ...] = (
    Archive("annotations_trainval2017.zip", "annotations/annotations_trainval2017.zip", 252_907_541,
            "f4bbac642086de4f52a3fdda2de5fa2c", ("annotations/instances_train2017.json", "annotations/instances_val2017.json")),
    Archive("val2017.zip", "zips/val2017.zip", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80", ("val2017",)),
    Archive("train2017.zip", "zips/train2017.zip", 19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2", ("train2017",)),
)  # fmt: skip


def load_manifest(path: Path) -> tuple[Archive, ...]:
    """Archives from a JSON list of ``{"name", "url_path", "size", "md5", "provides"}`` objects."""
    try:
        entries = json.loads(Path(path).read_text())
        return tuple(
            Archive(
                e["name"], e["url_path"], e.get("size"), e.get("md5"), tuple(e.get("provides", ()))
            )
            for e in entries
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DownloadError(
            f"manifest {path} is unreadable or malformed ({e!r}); it must be a JSON list of "
            '{"name", "url_path", "size", "md5", "provides"} objects'
        ) from None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch_once(url: str, part: Path, size: int | None, progress: bool, timeout: float) -> None:
    """One HTTP request appending to ``part`` from its current length (Range), to the end."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return
    if size is not None and have > size:
        part.unlink()
        have = 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the part may already be complete
            return
        raise
    with resp:
        if have and resp.status != 206:  # the server ignored Range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = size if size is not None else (have + int(length) if length else None)
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.name.removesuffix(".part"), disable=not progress) as bar,
        ):  # fmt: skip
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    # Only a body shorter than the server's own Content-Length is an interruption; a complete
    # body of the wrong size is left to the size check (which removes the file).
    got = part.stat().st_size
    expected = have + int(length) if length is not None else got
    if got < expected:  # the connection closed early without an error
        raise http.client.IncompleteRead(b"", expected - got)


_TRANSIENT = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
)


def download_file(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256_prefix: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed with HTTP Range) and verify it.

    An existing ``dest`` is verified and kept without any request. On a network failure the
    transfer resumes up to ``retries`` times; if it still fails, the ``.part`` file stays for the
    next run to resume and DownloadError says so. A size or hash mismatch removes the file and
    raises ChecksumError.
    """
    dest = Path(dest)
    if not dest.exists():
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        if size is not None:
            free = shutil.disk_usage(dest.parent).free
            if free < size - have:
                raise DownloadError(
                    f"not enough disk space for {dest.name} in {dest.parent}: needs "
                    f"{_human(size - have)} more, {_human(free)} free. Free space or choose another --root."
                )
        for attempt in range(retries + 1):
            try:
                _fetch_once(url, part, size, progress, timeout)
                break
            except urllib.error.HTTPError as e:
                if e.code < 500 or attempt == retries:
                    raise DownloadError(
                        f"downloading {url} failed: HTTP {e.code} {e.reason}. Check the URL "
                        "(--base-url) and that the server is reachable, then re-run."
                    ) from None
            except _TRANSIENT as e:
                if attempt == retries:
                    got = part.stat().st_size if part.exists() else 0
                    kept = f"{_human(got)} are kept in {part}; " if got else ""
                    raise DownloadError(
                        f"downloading {url} failed after {retries + 1} attempts: {e!r}. {kept}"
                        "Check the network (proxy, firewall, --base-url) and re-run the same "
                        "command" + (" to resume." if got else ".")
                    ) from None
            time.sleep(min(2.0**attempt, 10.0) * 0.1)
        part.rename(dest)
    _verify(dest, size=size, md5=md5, sha256_prefix=sha256_prefix)
    return dest


def _verify(path: Path, *, size: int | None, md5: str | None, sha256_prefix: str | None) -> None:
    problem = None
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        problem = f"size {actual_size} bytes, expected {size}"
    elif md5 is not None and (digest := _hash_file(path, "md5")) != md5:
        problem = f"MD5 {digest}, expected {md5}"
    elif sha256_prefix is not None and not (digest := _hash_file(path, "sha256")).startswith(
        sha256_prefix
    ):
        problem = f"sha256 {digest}, expected one starting with {sha256_prefix}"
    if problem:
        path.unlink()
        raise ChecksumError(
            f"{path} is corrupt or not the expected file ({problem}); it has been removed. "
            "Re-run the same command to download it again."
        )


def _stamp(root: Path, archive: Archive) -> Path:
    return root / STAMP_DIR / f"{archive.name}.done"


def _extract(zip_path: Path, root: Path) -> None:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(root)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(
            f"extracting {zip_path} into {root} failed: {e}. Check free disk space and "
            f"permissions; if the archive is damaged, delete {zip_path} and re-run."
        ) from None


def check_layout(root: Path, layout: Sequence[str] = COCO_LAYOUT) -> None:
    """Raise LayoutError unless every path of ``layout`` exists below ``root`` (folders non-empty)."""
    missing = []
    for rel in layout:
        p = root / rel
        if not p.exists() or (p.is_dir() and not any(p.iterdir())):
            missing.append(rel)
    if missing:
        raise LayoutError(
            f"dataset root {root} lacks {', '.join(missing)} (expected "
            f"{', '.join(layout)}). Re-run `ssd-data download --root {root}`, or point the "
            "data root at the folder that holds train2017/, val2017/ and annotations/."
        )


def download_coco(
    root: Path | str,
    *,
    base_url: str = DEFAULT_BASE_URL,
    archives: Sequence[Archive] = COCO_2017,
    layout: Sequence[str] = COCO_LAYOUT,
    progress: bool = True,
    retries: int = 3,
    remove_archives: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and extract ``archives`` into ``root``; check ``layout``; return ``root``.

    Archives whose stamp exists and whose extracted paths are present are skipped without any
    network access, so re-running is a no-op. ``remove_archives`` deletes each zip once extracted.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    for archive in archives:
        stamp = _stamp(root, archive)
        if stamp.exists() and all((root / p).exists() for p in archive.provides):
            continue
        zip_path = root / archive.name
        download_file(
            base + archive.url_path,
            zip_path,
            size=archive.size,
            md5=archive.md5,
            progress=progress,
            retries=retries,
            timeout=timeout,
        )
        _extract(zip_path, root)
        missing = [p for p in archive.provides if not (root / p).exists()]
        if missing:
            raise LayoutError(
                f"{zip_path} did not contain {', '.join(missing)}; is --base-url serving the COCO "
                f"2017 archives? Delete {zip_path} and re-run."
            )
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(f"{archive.md5 or ''}\n")
        if remove_archives:
            zip_path.unlink()
    check_layout(root, layout)
    return root


def download_backbone(
    url: str = BACKBONE_URL, *, progress: bool = True, retries: int = 3, timeout: float = 60.0
) -> Path:
    """Fetch backbone weights into ``torch.hub.get_dir()/checkpoints/`` and return their path.

    The expected sha256 prefix is the ``-<hex>.`` part of the URL's file name (torch.hub's
    convention); an already present, valid file is kept without any request.
    """
    import torch.hub

    name = url.rsplit("/", 1)[-1]
    match = re.search(r"-([a-f0-9]{6,})\.", name)
    if match is None:
        raise DownloadError(
            f"{url}: the file name carries no '-<sha256 prefix>.' part to verify it by"
        )
    dest = Path(torch.hub.get_dir()) / "checkpoints" / name
    return download_file(
        url, dest, sha256_prefix=match.group(1), progress=progress, retries=retries, timeout=timeout
    )
