"""Write Parquet image datasets for tests, demos and benchmarks (`batchscore make-data`).

    make_dataset("data/", 1000, row_groups=4, files=2, seed=0, corrupt=3)

The images are either taken from a folder (their bytes stored as they are) or synthesised: smooth
colour fields with shapes, striped and blotchy textures, a little blur and sensor-like noise, at
photo-like sizes (long side 400-500 px, aspect 1 to 3:2, some portrait), JPEG at quality 75-95 by
default. Everything follows from the seed: the same call writes the same bytes.

The default files average about 30 KB, lighter than real photos of that size (ImageNet's are about
110 KB): there is less fine detail to code. `noise` (a multiple of the default sensor noise) and
`jpeg_quality` (a range) make them heavier: noise=5 with quality 90-98 averaged 119.6 KB over
100,000 rows (benchmarks/results/scoring/h100_2026-11-23_s27/call8/e2e_heavy_1.json), for
benchmarks whose reading and JPEG decoding should cost what real files cost.

Rows get ids "img-000123" in a string column "id" and the images go in a column "image" of one of
three kinds (see scoring/dataset.py): "hf_struct", "binary" or "tensor" (HWC uint8, fixed size).
`corrupt` rows hold bad data for tests: one null, then truncated and garbage bytes, each checked to
fail Pillow's decode (tensor columns only have nulls).

Synthesis draws with Pillow (C) and numpy; each image has its own generator seeded by (seed, row),
so a process pool can make them in any order and still write the same file.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.decode import available_cores
from scoring.errors import DatasetError

COLUMN_KINDS = ("hf_struct", "binary", "tensor")
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_TENSOR_SIZE = (224, 224)
_TILE = 640              # side of the precomputed noise and texture tiles
_ROWS_PER_TASK = 32      # images per process-pool task
_POOL_MIN_ROWS = 256     # fewer rows than this are made in-process (a pool costs ~0.3 s to start)


@dataclass
class MadeDataset:
    """What make_dataset wrote. corrupt maps a row index to "null", "truncated" or "garbage"."""

    path: str
    files: list[str]
    rows: int
    row_groups: int
    bytes: int
    column_kind: str
    corrupt: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        counts = [(list(self.corrupt.values()).count(kind), kind) for kind in ("null", "truncated", "garbage")]
        bad = (f" ({len(self.corrupt)} corrupt: " + ", ".join(f"{n} {k}" for n, k in counts if n) + ")"
               if self.corrupt else "")
        return (f"wrote {self.rows} rows{bad} in {len(self.files)} file{'s' * (len(self.files) != 1)}, "
                f"{self.row_groups} row groups, {_human_bytes(self.bytes)}, {self.column_kind} column "
                f"'image', to {self.path} in {self.seconds:.1f} s")


def make_dataset(out: str | os.PathLike, rows: int | None = 1000, *, row_groups: int = 4, files: int = 1,
                 image_size=None, seed: int = 0, corrupt: int = 0, source_folder: str | os.PathLike | None = None,
                 column_kind: str = "hf_struct", format: str = "JPEG", grayscale: float = 0.0, rgba: float = 0.0,
                 exif_rotated: float = 0.0, workers: int | None = None, overwrite: bool = False,
                 noise: float = 1.0, jpeg_quality: tuple[int, int] = (75, 95)) -> MadeDataset:
    """Write `rows` images to Parquet under `out`.

    out           a directory (files part-00000.parquet, ...) or, with files=1, a path ending in .parquet
    rows          number of rows; with source_folder, None takes every image once (more rows cycle)
    row_groups    row groups per file (rows are spread evenly over files, then over row groups)
    image_size    None: photo-like sizes (tensor kind: 224x224); an int or (h, w): fixed; ((h_lo, h_hi),
                  (w_lo, w_hi)): each side uniform in its range (inclusive). Tensor columns need a fixed size.
    corrupt       rows holding bad data: one null, then truncated and garbage bytes in turn
    format        "JPEG", "PNG" or "WebP" for synthetic images; RGBA rows become PNG when JPEG is asked
    grayscale, rgba, exif_rotated
                  fractions of synthetic rows that are single-channel, have an alpha channel, or are
                  stored rotated with an EXIF orientation tag (6) that turns them upright (JPEG only)
    workers       processes for synthesis (None: the CPUs, for 256 rows or more; 1: in this process)
    noise         sensor-like noise of synthetic images, a multiple of the default's strength (> 0)
    jpeg_quality  (low, high): each synthetic JPEG's quality is drawn from low..high (1-100)
    """
    start = time.perf_counter()
    spec = _check_arguments(rows, row_groups, files, corrupt, source_folder, column_kind, format, grayscale,
                            rgba, exif_rotated, workers) | _check_detail(noise, jpeg_quality)
    size_rule = _size_rule(image_size, column_kind)
    sources = _folder_images(Path(source_folder)) if source_folder is not None else None
    if rows is None:
        rows = len(sources)
        if files > rows:
            raise DatasetError(f"{files} files for the {rows} images of {source_folder} would leave files empty")
    if corrupt > rows:
        raise DatasetError(f"corrupt={corrupt} is more than the {rows} rows asked for")
    paths = _output_paths(Path(out), files, overwrite)

    corrupt_rows = _pick_corrupt_rows(rows, corrupt, seed, column_kind)
    width = max(6, len(str(rows - 1)))
    ids = [f"img-{i:0{width}d}" for i in range(rows)]
    schema = _schema(column_kind, size_rule)

    if sources is not None:
        payloads = _folder_payloads(sources, rows, column_kind, size_rule)
    else:
        payloads = _synthetic_payloads(rows, seed, spec | {"size": size_rule, "kind": column_kind}, workers)

    # Encoded images do not compress further. Parquet has no 8-bit type: uint8 pixels are stored as
    # int32, 4 bytes each, unless dictionary-encoded (256 values: 1 byte each, and fast to decode).
    dictionary = ["image.list.element"] if column_kind == "tensor" else False
    total_groups = 0
    written: list[str] = []
    try:
        for path, file_rows in zip(paths, np.array_split(np.arange(rows), files)):
            groups = np.array_split(file_rows, max(1, min(row_groups, len(file_rows))))
            tmp = path.with_name(f".{path.name}.tmp")  # hidden from dataset readers until complete
            try:
                with pq.ParquetWriter(tmp, schema, compression="none", use_dictionary=dictionary,
                                      write_statistics=["id"]) as writer:
                    for group in groups:
                        batch = [next(payloads) for _ in range(len(group))]
                        table = _table(schema, column_kind, group, ids, batch, corrupt_rows, seed)
                        writer.write_table(table, row_group_size=len(group))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(str(path))
            total_groups += len(groups)
    finally:
        payloads.close()  # stops the process pool early if writing failed
    return MadeDataset(path=str(out), files=written, rows=rows, row_groups=total_groups,
                       bytes=sum(os.path.getsize(p) for p in written), column_kind=column_kind,
                       corrupt=dict(sorted(corrupt_rows.items())), seconds=time.perf_counter() - start)


# -- arguments ------------------------------------------------------------------------------------------

MAX_NOISE = 20.0  # beyond this the pictures are mostly noise


def _check_detail(noise, jpeg_quality) -> dict:
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(noise) <= MAX_NOISE:
        raise DatasetError(f"noise is a multiple of the default noise, above 0 and at most {MAX_NOISE:g}; got {noise!r}")
    try:
        low, high = (int(q) for q in jpeg_quality)
    except (TypeError, ValueError):
        raise DatasetError(f"jpeg_quality is a range (low, high), got {jpeg_quality!r}") from None
    if not 1 <= low <= high <= 100:
        raise DatasetError(f"jpeg_quality must satisfy 1 <= low <= high <= 100, got {jpeg_quality!r}")
    return {"noise": float(noise), "quality": (low, high)}


def _check_arguments(rows, row_groups, files, corrupt, source_folder, column_kind, format, grayscale, rgba,
                     exif_rotated, workers) -> dict:
    def positive(name, value, allow_zero=False):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
            raise DatasetError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                               f"integer, got {value!r}")

    if rows is None:
        if source_folder is None:
            raise DatasetError("give the number of rows (rows=None needs a source folder)")
    else:
        positive("rows", rows)
    positive("row_groups", row_groups)
    positive("files", files)
    positive("corrupt", corrupt, allow_zero=True)
    if workers is not None:
        positive("workers", workers)
    if rows is not None and files > rows:
        raise DatasetError(f"{files} files for {rows} rows would leave files empty")
    if column_kind not in COLUMN_KINDS:
        raise DatasetError(f"column kind must be one of {', '.join(COLUMN_KINDS)}, got {column_kind!r}")
    fmt = str(format).upper()
    if fmt not in FORMATS:
        raise DatasetError(f"format must be JPEG, PNG or WebP, got {format!r}")
    for name, value in (("grayscale", grayscale), ("rgba", rgba), ("exif_rotated", exif_rotated)):
        if not 0.0 <= value <= 1.0:
            raise DatasetError(f"{name} is a fraction of the rows, between 0 and 1; got {value}")
    if grayscale + rgba > 1.0:
        raise DatasetError(f"grayscale + rgba fractions exceed 1 ({grayscale} + {rgba})")
    return {"format": fmt, "grayscale": float(grayscale), "rgba": float(rgba), "exif": float(exif_rotated)}


def _size_rule(image_size, column_kind: str) -> tuple:
    """-> ("fixed", h, w) | ("range", (h_lo, h_hi), (w_lo, w_hi)) | ("photo",)."""
    def side(value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DatasetError(f"image sizes are positive integers, got {image_size!r}")
        return int(value)

    if image_size is None:
        rule = ("fixed",) + DEFAULT_TENSOR_SIZE if column_kind == "tensor" else ("photo",)
    elif isinstance(image_size, (int, np.integer)):
        rule = ("fixed", side(image_size), side(image_size))
    elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(isinstance(v, (int, np.integer)) for v in image_size)):
        rule = ("fixed", side(image_size[0]), side(image_size[1]))
    elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in image_size)):
        (hlo, hhi), (wlo, whi) = [(side(a), side(b)) for a, b in image_size]
        if hlo > hhi or wlo > whi:
            raise DatasetError(f"a size range goes from low to high, got {image_size!r}")
        rule = ("range", (hlo, hhi), (wlo, whi))
    else:
        raise DatasetError(f"image_size is an int, (h, w) or ((h_lo, h_hi), (w_lo, w_hi)); "
                           f"got {image_size!r}")
    if column_kind == "tensor" and rule[0] != "fixed":
        raise DatasetError(f"a tensor column holds one fixed shape; give a fixed image size, (h, w) or "
                           f"--image-size HxW, not {image_size!r}")
    return rule


def _output_paths(out: Path, files: int, overwrite: bool) -> list[Path]:
    if out.suffix == ".parquet":
        if files != 1:
            raise DatasetError(f"{out} names one file, but {files} files were asked for; "
                               "give a directory instead")
        if out.exists() and not overwrite:
            raise DatasetError(f"{out} exists; remove it or pass overwrite=True (--overwrite)")
        if out.is_dir():
            raise DatasetError(f"{out} is a directory")
        out.parent.mkdir(parents=True, exist_ok=True)
        return [out]
    if out.exists():
        if not out.is_dir():
            raise DatasetError(f"{out} exists and is not a directory")
        if any(out.iterdir()):
            if not overwrite:
                raise DatasetError(f"{out} is not empty; remove it or pass overwrite=True (--overwrite)")
            for old in out.glob("*.parquet"):  # only what a dataset reader would pick up
                old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return [out / f"part-{k:05d}.parquet" for k in range(files)]


def _pick_corrupt_rows(rows: int, corrupt: int, seed: int, column_kind: str) -> dict[int, str]:
    if corrupt == 0:
        return {}
    chosen = np.random.default_rng([seed, 0xBAD]).choice(rows, size=corrupt, replace=False)
    kinds = {}
    for n, row in enumerate(chosen.tolist()):
        kinds[row] = "null" if n == 0 or column_kind == "tensor" else ("truncated", "garbage")[(n - 1) % 2]
    return kinds


def _spread(row: int, fraction: float, offset: float) -> bool:
    """True for about `fraction` of the rows, evenly spread (golden-ratio sequence), so that a
    small dataset with fraction 0.1 still gets its tenth."""
    return fraction > 0 and ((row * 0.6180339887498949 + offset) % 1.0) < fraction


# -- the table --------------------------------------------------------------------------------------------

def _schema(column_kind: str, size_rule: tuple) -> pa.Schema:
    id_field = pa.field("id", pa.string(), nullable=False)
    if column_kind == "tensor":
        h, w = size_rule[1], size_rule[2]
        image = pa.field("image", pa.list_(pa.uint8(), h * w * 3), metadata={b"shape": f"{h},{w},3".encode()})
        return pa.schema([id_field, image])
    if column_kind == "binary":
        return pa.schema([id_field, pa.field("image", pa.binary())])
    image = pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    features = {"id": {"dtype": "string", "_type": "Value"}, "image": {"_type": "Image"}}
    return pa.schema([id_field, image], metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()})


def _table(schema, column_kind, rows, ids, payloads, corrupt_rows, seed) -> pa.Table:
    """payloads[i] is (bytes, file suffix) or, for tensors, an HWC uint8 array."""
    row_ids = [ids[r] for r in rows]
    if column_kind == "tensor":
        h, w = schema.field("image").metadata[b"shape"].decode().split(",")[:2]
        flat = np.zeros((len(rows), int(h) * int(w) * 3), np.uint8)
        mask = np.zeros(len(rows), bool)
        for i, (row, pixels) in enumerate(zip(rows.tolist(), payloads)):
            if row in corrupt_rows:
                mask[i] = True
            else:
                flat[i] = pixels.reshape(-1)
        values = pa.array(flat.reshape(-1))
        image = pa.FixedSizeListArray.from_arrays(values, flat.shape[1], mask=pa.array(mask))
        return pa.Table.from_arrays([pa.array(row_ids, pa.string()), image], schema=schema)
    data, paths = [], []
    for row, (payload, suffix) in zip(rows.tolist(), payloads):
        kind = corrupt_rows.get(row)
        data.append(None if kind == "null" else _corrupt(payload, kind, seed, row) if kind else payload)
        paths.append(f"{ids[row]}.{suffix}")
    if column_kind == "binary":
        image = pa.array(data, pa.binary())
    else:
        image = pa.StructArray.from_arrays(
            [pa.array([b if b is not None else b"" for b in data], pa.binary()), pa.array(paths, pa.string())],
            names=["bytes", "path"], mask=pa.array([b is None for b in data]))
    return pa.Table.from_arrays([pa.array(row_ids, pa.string()), image], schema=schema)


def _corrupt(data: bytes, kind: str, seed: int, row: int) -> bytes:
    """Truncated or garbage bytes that Pillow refuses to decode (checked: Pillow guesses formats
    from a few header bytes, and an unlucky random header could pass for one)."""
    rng = np.random.default_rng([seed, row, 0xBAD])
    for _ in range(100):
        if kind == "truncated":
            bad = data[:max(16, int(len(data) * rng.uniform(0.2, 0.8)))]
        else:
            bad = rng.integers(0, 256, int(rng.integers(200, 4000)), dtype=np.uint8).tobytes()
        if not _decodes(bad):
            return bad
    return data[:16]  # a header alone never decodes


def _decodes(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return True
    except Exception:
        return False


# -- images from a folder ---------------------------------------------------------------------------------

def _folder_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"no such folder: {folder}")
    found = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not found:
        raise DatasetError(f"no images under {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def _folder_payloads(sources: list[Path], rows: int, column_kind: str, size_rule: tuple):
    from PIL import Image, ImageOps

    for row in range(rows):
        path = sources[row % len(sources)]
        data = path.read_bytes()
        if column_kind != "tensor":
            yield data, path.suffix.lstrip(".").lower()
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
        except Exception as exc:
            raise DatasetError(f"cannot decode {path} to store it as a tensor: {exc}") from None
        h, w = size_rule[1], size_rule[2]
        yield np.asarray(ImageOps.fit(image, (w, h), Image.Resampling.BILINEAR))


# -- synthetic images ---------------------------------------------------------------------------------------

def _synthetic_payloads(rows: int, seed: int, spec: dict, workers: int | None):
    tasks = [(seed, start, min(start + _ROWS_PER_TASK, rows), spec) for start in range(0, rows, _ROWS_PER_TASK)]
    if workers is None:
        workers = available_cores() if rows >= _POOL_MIN_ROWS else 1
    workers = min(workers, len(tasks))
    if workers <= 1:
        for task in tasks:
            yield from _synth_range(task)
        return
    import multiprocessing
    import warnings

    # fork on Linux: workers start at once and nothing re-imports the caller's __main__ (spawn would,
    # breaking scripts without a main guard). Forking a process that has Arrow's threads is safe here:
    # the children run only numpy and Pillow; Python 3.12+ warns about such forks regardless.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            for chunk in pool.map(_synth_range, tasks):
                yield from chunk


def _synth_range(task) -> list:
    seed, start, stop, spec = task
    return [_synth_one(seed, row, spec) for row in range(start, stop)]


def _synth_one(seed: int, row: int, spec: dict):
    """One image: (encoded bytes, suffix), or an HWC uint8 array for tensor columns."""
    from PIL import Image

    rng = np.random.default_rng([seed, row])
    h, w = _draw_size(rng, spec["size"])
    image = _draw_picture(rng, h, w, spec.get("noise", 1.0))
    if spec["kind"] == "tensor":
        return np.asarray(image)
    offset = (seed * 0.7548776662466927) % 1.0  # another seed, other rows
    mode = ("L" if _spread(row, spec["grayscale"], offset)
            else "RGBA" if _spread(row, spec["grayscale"] + spec["rgba"], offset) else "RGB")
    if mode == "L":
        image = image.convert("L")
    elif mode == "RGBA":
        image.putalpha(_alpha_mask(rng, h, w))
    fmt = spec["format"]
    if mode == "RGBA" and fmt == "JPEG":
        fmt = "PNG"
    out = io.BytesIO()
    if fmt == "JPEG":
        low, high = spec.get("quality", (75, 95))
        options = {"quality": int(rng.integers(low, high + 1))}
        if _spread(row, spec["exif"], offset + 0.37):
            exif = Image.Exif()
            exif[0x0112] = 6  # "rotate 90 CW to display": store it turned the other way
            image = image.transpose(Image.Transpose.ROTATE_90)
            options["exif"] = exif.tobytes()
        image.save(out, "JPEG", **options)
    elif fmt == "PNG":
        image.save(out, "PNG", compress_level=1)
    else:
        image.save(out, "WEBP", quality=int(rng.integers(70, 91)), method=0)
    return out.getvalue(), FORMATS[fmt]


def _draw_size(rng: np.random.Generator, rule: tuple) -> tuple[int, int]:
    if rule[0] == "fixed":
        return rule[1], rule[2]
    if rule[0] == "range":
        (hlo, hhi), (wlo, whi) = rule[1], rule[2]
        return int(rng.integers(hlo, hhi + 1)), int(rng.integers(wlo, whi + 1))
    # Photo-like: long side 400-500, a common aspect ratio, a third of them portrait.
    long = int(rng.integers(400, 501))
    short = int(round(long / rng.choice([1.0, 5 / 4, 4 / 3, 4 / 3, 3 / 2, 3 / 2])))
    return (long, short) if rng.random() < 1 / 3 else (short, long)


def _draw_picture(rng: np.random.Generator, h: int, w: int, noise_scale: float = 1.0):
    """Smooth colour field + shapes (some textured) + optional softening + noise, RGB."""
    from PIL import Image, ImageChops, ImageDraw

    noise_tiles, textures = _tiles(noise_scale)
    base = rng.integers(30, 226, 3)
    grid = np.clip(base + rng.normal(0, 55, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)), 0, 255)
    image = Image.fromarray(grid.astype(np.uint8), "RGB").resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)

    def colour():
        c = rng.integers(0, 256, 3) if rng.random() < 0.5 else np.clip(base + rng.normal(0, 70, 3), 0, 255)
        return tuple(int(v) for v in c)

    for _ in range(int(rng.integers(3, 12))):
        bw = int(rng.integers(max(1, w // 10), max(2, w // 2)))
        bh = int(rng.integers(max(1, h // 10), max(2, h // 2)))
        x0, y0 = int(rng.integers(-bw // 3, w)), int(rng.integers(-bh // 3, h))
        shape = int(rng.integers(0, 5))
        if shape == 0:
            draw.ellipse((x0, y0, x0 + bw, y0 + bh), fill=colour())
        elif shape == 1:
            draw.rectangle((x0, y0, x0 + bw, y0 + bh), fill=colour())
        elif shape == 2:
            points = list(zip(rng.integers(0, w, 4).tolist(), rng.integers(0, h, 4).tolist()))
            draw.polygon(points, fill=colour())
        elif shape == 3:
            draw.line((x0, y0, x0 + bw, y0 + bh), fill=colour(), width=int(rng.integers(1, 6)))
        else:  # a textured blob: a texture tile, coloured, pasted through an ellipse
            mask = Image.new("L", (bw, bh), 0)
            ImageDraw.Draw(mask).ellipse((0, 0, bw - 1, bh - 1), fill=255)
            texture = _crop(textures[int(rng.integers(len(textures)))], rng, bw, bh)
            image.paste(_colorize(texture, colour(), colour()), (x0, y0), mask)
    if rng.random() < 0.4 and min(h, w) >= 4:  # out of focus: half size and back
        image = image.reduce(2).resize((w, h), Image.Resampling.BILINEAR)
    noise = noise_tiles[int(rng.integers(len(noise_tiles)))]
    return ImageChops.add(image, _crop(noise, rng, w, h), 1.0, -128)


def _colorize(grey, black: tuple, white: tuple):
    """Map grey 0..255 linearly onto black..white (ImageOps.colorize, without its slow Python LUT)."""
    from PIL import Image

    ramp = np.arange(256) / 255.0
    luts = [np.round(b + (w - b) * ramp).astype(np.uint8).tolist() for b, w in zip(black, white)]
    return Image.merge("RGB", [grey.point(lut) for lut in luts])


def _alpha_mask(rng: np.random.Generator, h: int, w: int):
    """Opaque inside an ellipse, transparent outside (a cut-out, as product photos have)."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (w, h), 0)
    mx, my = int(rng.integers(0, max(1, w // 6))), int(rng.integers(0, max(1, h // 6)))
    ImageDraw.Draw(mask).ellipse((mx, my, w - 1 - mx, h - 1 - my), fill=255)
    return mask


def _crop(tile, rng: np.random.Generator, w: int, h: int):
    """A w x h window of a tile at a random place, the tile repeated when the window is larger."""
    from PIL import Image

    side = tile.size[0]
    x, y = int(rng.integers(0, side)), int(rng.integers(0, side))
    if x + w <= side and y + h <= side:
        return tile.crop((x, y, x + w, y + h))
    out = Image.new(tile.mode, (w, h))
    for oy in range(-y, h, side):
        for ox in range(-x, w, side):
            out.paste(tile, (ox, oy))
    return out


_TILES: dict = {}  # noise scale -> (noise tiles, textures)


def _tiles(noise_scale: float = 1.0):
    """Noise tiles (three strengths times `noise_scale`, centred on 128) and grey textures, made once
    per process and scale from a fixed seed: images differ by where they crop them, so the output
    still depends only on the seed."""
    if noise_scale not in _TILES:
        from PIL import Image

        rng = np.random.default_rng(20240611)
        s = _TILE
        noise = [Image.fromarray(np.clip(128 + rng.normal(0, sigma * noise_scale, (s, s, 3)), 0, 255).astype(np.uint8),
                                 "RGB") for sigma in (2.5, 5, 9)]
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        textures = []
        for k in range(6):
            angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
            t = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq)
            if k % 2:  # a checker-like weave
                t *= np.sin((xx * np.sin(angle) - yy * np.cos(angle)) * freq * rng.uniform(0.3, 1.5))
            textures.append(Image.fromarray(((t + 1) * 127.5).astype(np.uint8), "L"))
        for cells in (8, 20):  # blotches: coarse random fields, smoothly upscaled
            blob = rng.integers(0, 256, (cells, cells), dtype=np.uint8)
            textures.append(Image.fromarray(blob, "L").resize((s, s), Image.Resampling.BICUBIC))
        _TILES[noise_scale] = (noise, textures)
    return _TILES[noise_scale]


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
