"""``ssd-data`` command line: ``synth`` (synthetic COCO), ``download`` (COCO 2017, backbone), ``bench``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

_EPILOG = """examples:
  ssd-data synth --out data/synthetic                  # 2,000 train + 250 val 'easy' images
  ssd-data synth --out data/synth-hard --difficulty hard --train-images 20000
  ssd-data download --root /data/coco2017 --backbone   # COCO 2017 (~20 GB) + ResNet-34 weights
  ssd-data download --no-dataset --backbone            # only the ResNet-34 ImageNet weights
  ssd-data bench --help                                # input pipeline throughput

Each command's own --help lists its options (ssd-data synth --help).
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' paragraphs; adds '(default: X)' only where a default means something
    (not for unset options or off switches)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"


def _parser() -> argparse.ArgumentParser:
    from ssd_data.synthetic.presets import PRESETS

    p = argparse.ArgumentParser(
        prog="ssd-data",
        description="Datasets for the MLPerf SSD300 benchmark: synthetic COCO-format data, the "
        "COCO 2017 download, and the input pipeline benchmark.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{synth,download,bench}")

    s = sub.add_parser(
        "synth",
        help="write a synthetic COCO-format dataset (the same arguments give the same files)",
        description="Write DIR/train2017, DIR/val2017 and DIR/annotations/instances_{train,val}2017.json\n"
        "with drawn objects whose class shows in shape, texture and colour. The same arguments\n"
        "give byte-identical files; re-running them does nothing.",
        formatter_class=_Formatter,
    )
    s.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="dataset folder to create"
    )
    s.add_argument(
        "--train-images", type=int, default=2000, metavar="N", help="images in train2017"
    )
    s.add_argument("--val-images", type=int, default=250, metavar="N", help="images in val2017")
    s.add_argument("--seed", type=int, default=0, metavar="N", help="dataset seed")
    s.add_argument(
        "--difficulty",
        choices=sorted(PRESETS),
        default="easy",
        help="how hard the images are: starter and easy (the CPU default job): few classes,"
        " distinct shape and colour, big objects; medium: 20 classes, close colours, more"
        " clutter; hard: 80 classes, small objects, heavy clutter",
    )
    s.add_argument(
        "--categories",
        choices=("all", "used"),
        default="all",
        help="list all 80 COCO categories in the annotation files, or only those drawn",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes drawing images (default: min(4, CPUs - 1))",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser(
        "download",
        help="download, verify and extract COCO 2017 and/or the ResNet-34 backbone",
        description="Download train2017.zip, val2017.zip and annotations_trainval2017.zip into DIR\n"
        "(resuming partial files), verify sizes and MD5s, extract, and check DIR's layout.\n"
        "Re-running does nothing. --backbone also fetches torchvision's ImageNet ResNet-34\n"
        "weights into the torch hub cache (TORCH_HOME), where the trainer looks for them.",
        formatter_class=_Formatter,
    )
    from ssd_data.download import BACKBONE_URL, DEFAULT_BASE_URL

    d.add_argument(
        "--root", type=Path, metavar="DIR", help="dataset folder (needed unless --no-dataset)"
    )
    d.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        metavar="URL",
        help="COCO host (a mirror serving zips/ and annotations/)",
    )
    d.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="a JSON list of archives (name, url_path, size, md5, provides) that replaces COCO"
        " 2017's, for mirrors that repackage the data",
    )
    d.add_argument(
        "--backbone", action="store_true", help="also fetch the ResNet-34 ImageNet weights"
    )
    d.add_argument(
        "--backbone-url",
        default=BACKBONE_URL,
        metavar="URL",
        help="where the backbone weights come from (the file name must carry the start of its"
        " sha256, as torch.hub's do)",
    )
    d.add_argument(
        "--no-dataset", action="store_true", help="skip COCO (e.g. with --backbone only)"
    )
    d.add_argument("--remove-archives", action="store_true", help="delete each zip once extracted")
    d.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="resume attempts per file on network errors",
    )
    d.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds without data before a retry",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser(
        "bench",
        help="throughput of the training input pipeline against a torchvision baseline"
        " (ssd-data bench --help)",
        add_help=False,
    )
    return p


def _bench(argv: list[str]) -> int:
    try:
        bench = importlib.import_module("ssd_data.bench.cli")
    except ModuleNotFoundError as e:
        if e.name != "ssd_data.bench.cli":
            raise
        print(
            "ssd-data bench: the benchmark module ssd_data.bench.cli is not available in this "
            "installation (it is part of the data pipeline and has not been added yet).",
            file=sys.stderr,
        )
        return 2
    return int(bench.main(argv) or 0)


def _synth(args: argparse.Namespace) -> int:
    from ssd_data.synthetic.generate import generate_synthetic_coco

    out = generate_synthetic_coco(
        args.out,
        train_images=args.train_images,
        val_images=args.val_images,
        seed=args.seed,
        difficulty=args.difficulty,
        categories=args.categories,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(f"synthetic COCO dataset ({args.difficulty}) ready in {out}")
    return 0


def _download(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ssd_data.download import COCO_2017, download_backbone, download_coco, load_manifest

    if args.no_dataset and not args.backbone:
        parser.error("download: --no-dataset without --backbone has nothing to do")
    if not args.no_dataset and args.root is None:
        parser.error("download: --root DIR is required (or pass --no-dataset --backbone)")
    if not args.no_dataset:
        root = download_coco(
            args.root,
            archives=load_manifest(args.manifest) if args.manifest else COCO_2017,
            base_url=args.base_url,
            progress=not args.quiet,
            retries=args.retries,
            remove_archives=args.remove_archives,
            timeout=args.timeout,
        )
        print(f"COCO 2017 ready in {root}")
    if args.backbone:
        path = download_backbone(
            args.backbone_url, progress=not args.quiet, retries=args.retries, timeout=args.timeout
        )
        print(f"backbone weights ready: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``ssd-data`` with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    from ssd_data.download import DownloadError

    try:
        if args.command == "synth":
            return _synth(args)
        return _download(args, parser)
    except (DownloadError, FileExistsError, ValueError) as e:
        print(f"ssd-data {args.command}: error: {e}", file=sys.stderr)
        return 1
