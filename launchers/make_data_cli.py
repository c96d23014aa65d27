"""`batchscore make-data`: write a Parquet image dataset (synthetic or from a folder of images).

Hooked into launchers/cli.py with

    p = sub.add_parser("make-data", parents=[common], help="write a Parquet image dataset for tests and benchmarks")
    configure_make_data_parser(p)      # adds the arguments and sets func=cmd_make_data
"""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Write a Parquet dataset of images, synthetic (photo-like sizes and content, deterministic for a seed) "
    "or taken from a folder, with ids 'img-000123' in a string column 'id' and the images in a column "
    "'image' (a Hugging Face image struct, plain binary, or decoded HWC uint8 tensors). --corrupt adds rows "
    "of bad data (one null, then truncated and garbage bytes) to exercise error handling."
)


def _count(text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction of the rows is between 0 and 1, got {value}")
    return value


def parse_noise(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 < value <= 20.0:
        raise argparse.ArgumentTypeError(f"noise is a multiple of the default, above 0 and at most 20; got {value}")
    return value


def parse_quality(text: str) -> tuple[int, int]:
    """'75-95' (a range) or '90' (every image at 90): JPEG qualities between 1 and 100."""
    low, sep, high = text.partition("-")
    try:
        values = (int(low), int(high)) if sep else (int(text), int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': give a quality or a range LOW-HIGH, e.g. 90-98") from None
    if not 1 <= values[0] <= values[1] <= 100:
        raise argparse.ArgumentTypeError(f"'{text}': qualities go from 1 to 100, low to high")
    return values


def parse_image_size(text: str):
    """'375x500' (HxW), '256' (square), '300-500' (each side in a range), '300-400x400-500'."""
    def side(part: str):
        low, sep, high = part.partition("-")
        try:
            values = (int(low), int(high)) if sep else int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{text}': sizes are HxW, a single side, or ranges LOW-HIGH (e.g. 375x500, 224, 300-500)") from None
        if min(values if sep else (values,)) < 1 or (sep and values[0] > values[1]):
            raise argparse.ArgumentTypeError(f"'{text}': sides are positive and ranges go from low to high")
        return values

    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"'{text}': give HxW, e.g. 375x500")
    h, w = side(parts[0]), side(parts[1])
    if isinstance(h, int) and isinstance(w, int):
        return (h, w)
    return tuple((v, v) if isinstance(v, int) else v for v in (h, w))


def configure_make_data_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = DESCRIPTION
    parser.add_argument("out", help="directory to write (part-00000.parquet, ...), or a FILE.parquet with --files 1")
    parser.add_argument("--rows", type=_count, default=None,
                        help="number of rows (default 1000; with --from-folder, every image once)")
    parser.add_argument("--files", type=_count, default=1, help="Parquet files to spread the rows over (default 1)")
    parser.add_argument("--row-groups", type=_count, default=4, help="row groups per file (default 4)")
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="HxW",
                        help="fixed (375x500, 224) or ranges (300-500, 300-400x400-500); default: photo-like "
                        "sizes, long side 400-500 (224x224 for tensors)")
    parser.add_argument("--column-kind", choices=("hf_struct", "binary", "tensor"), default="hf_struct",
                        help="how images are stored (default hf_struct: struct<bytes, path>)")
    parser.add_argument("--format", type=str.upper, choices=("JPEG", "PNG", "WEBP"), default="JPEG",
                        help="encoding of synthetic images (default JPEG)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes (default 0)")
    parser.add_argument("--corrupt", type=lambda t: _count(t, 0), default=0, metavar="N",
                        help="rows of bad data: one null, then truncated and garbage bytes (default 0)")
    parser.add_argument("--grayscale", type=_fraction, default=0.0, metavar="FRACTION",
                        help="fraction of single-channel images (default 0)")
    parser.add_argument("--rgba", type=_fraction, default=0.0, metavar="FRACTION",
                        help="fraction of images with an alpha channel, stored as PNG when JPEG is asked (default 0)")
    parser.add_argument("--exif-rotated", type=_fraction, default=0.0, metavar="FRACTION",
                        help="fraction of JPEGs stored turned, with an EXIF orientation tag (default 0)")
    parser.add_argument("--noise", type=parse_noise, default=1.0, metavar="X",
                        help="sensor-like noise of synthetic images, X times the default's (default 1; "
                        "5 with --jpeg-quality 90-98 gives files of about 120 KB, as real photos of that size)")
    parser.add_argument("--jpeg-quality", type=parse_quality, default=(75, 95), metavar="LOW-HIGH",
                        help="quality of synthetic JPEGs, drawn per image from the range (default 75-95)")
    parser.add_argument("--from-folder", metavar="DIR", help="take the images from this folder instead of "
                        "synthesising them (searched recursively; bytes stored as they are)")
    parser.add_argument("--workers", type=_count, default=None, help="processes for synthesis (default: the CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="replace the Parquet files already in OUT")
    parser.set_defaults(func=cmd_make_data)
    return parser


def cmd_make_data(args: argparse.Namespace) -> int:
    from scoring.make_data import make_dataset

    rows = args.rows if args.rows is not None or args.from_folder else 1000
    made = make_dataset(
        args.out, rows, row_groups=args.row_groups, files=args.files, image_size=args.image_size, seed=args.seed,
        corrupt=args.corrupt, source_folder=args.from_folder, column_kind=args.column_kind, format=args.format,
        grayscale=args.grayscale, rgba=args.rgba, exif_rotated=args.exif_rotated, workers=args.workers,
        overwrite=args.overwrite, noise=args.noise, jpeg_quality=args.jpeg_quality)
    print(made.summary())
    return 0
