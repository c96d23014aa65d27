"""scoring/make_data.py and `batchscore make-data`: determinism, layout, realism, corrupt rows, errors."""

from __future__ import annotations

import argparse
import hashlib
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from launchers.make_data_cli import cmd_make_data, configure_make_data_parser, parse_image_size, parse_quality
from scoring.dataset import open_dataset, read_shard
from scoring.errors import DatasetError
from scoring.make_data import make_dataset

SMALL = ((48, 64), (48, 64))  # small images keep the tests fast where size does not matter


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def all_items(path, **kwargs):
    ds = open_dataset(path, **kwargs)
    ids, items = [], []
    for shard in ds.shards(10**9):
        for batch in read_shard(ds, shard, 64):
            ids.extend(batch.ids.tolist())
            items.extend(batch.items)
    return ds, ids, items


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = make_dataset(tmp_path / "a", 24, row_groups=2, seed=7, image_size=SMALL, corrupt=3, grayscale=0.2, rgba=0.2)
    b = make_dataset(tmp_path / "b", 24, row_groups=2, seed=7, image_size=SMALL, corrupt=3, grayscale=0.2, rgba=0.2)
    c = make_dataset(tmp_path / "c", 24, row_groups=2, seed=8, image_size=SMALL, corrupt=3, grayscale=0.2, rgba=0.2)
    assert sha(a.files[0]) == sha(b.files[0]) != sha(c.files[0])
    assert a.corrupt == b.corrupt


def test_process_pool_writes_the_same_bytes(tmp_path):
    one = make_dataset(tmp_path / "one", 70, seed=3, image_size=(40, 40), workers=1)
    two = make_dataset(tmp_path / "two", 70, seed=3, image_size=(40, 40), workers=2)  # 3 tasks of 32 rows
    assert sha(one.files[0]) == sha(two.files[0])


def test_layout_ids_and_summary(tmp_path):
    made = make_dataset(tmp_path / "d", 25, row_groups=3, files=2, image_size=SMALL)
    assert [f.rsplit("/", 1)[1] for f in made.files] == ["part-00000.parquet", "part-00001.parquet"]
    assert [pq.ParquetFile(f).metadata.num_row_groups for f in made.files] == [3, 3]
    assert (made.rows, made.row_groups) == (25, 6)
    assert made.bytes == sum((tmp_path / "d" / f"part-0000{k}.parquet").stat().st_size for k in range(2))
    ds, ids, items = all_items(tmp_path / "d")
    assert ds.kind == "hf_struct" and ds.id_column == "id"
    assert ids == [f"img-{r:06d}" for r in range(25)]
    assert all(decode(item).format == "JPEG" for item in items)
    assert made.summary().startswith("wrote 25 rows in 2 files, 6 row groups, ")
    assert made.summary().endswith(f"hf_struct column 'image', to {tmp_path / 'd'} in {made.seconds:.1f} s")


def test_hf_struct_carries_paths_and_feature_metadata(tmp_path):
    made = make_dataset(tmp_path / "one.parquet", 3, row_groups=1, image_size=SMALL, format="WebP")
    table = pq.read_table(made.files[0])
    assert [cell["path"] for cell in table.column("image").to_pylist()] == [
        "img-000000.webp", "img-000001.webp", "img-000002.webp"]
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    assert decode(table.column("image")[0].as_py()["bytes"]).format == "WEBP"


def test_binary_png(tmp_path):
    make_dataset(tmp_path / "d", 4, row_groups=1, column_kind="binary", format="png", image_size=SMALL)
    ds, _, items = all_items(tmp_path / "d")
    assert ds.kind == "binary"
    assert {decode(item).format for item in items} == {"PNG"}


def test_tensor_column(tmp_path):
    made = make_dataset(tmp_path / "d", 5, row_groups=2, column_kind="tensor", image_size=(12, 20), corrupt=2)
    ds, ids, items = all_items(tmp_path / "d")
    assert (ds.kind, ds.tensor_shape) == ("tensor", (12, 20, 3))
    assert set(made.corrupt.values()) == {"null"}  # a fixed-size tensor cannot be truncated
    for row, item in enumerate(items):
        if row in made.corrupt:
            assert item is None
        else:
            assert item.shape == (12, 20, 3) and item.dtype == np.uint8 and item.std() > 5
    assert make_dataset(tmp_path / "e", 1, column_kind="tensor").summary()  # default 224x224
    assert open_dataset(tmp_path / "e").tensor_shape == (224, 224, 3)


def test_corrupt_rows_fail_to_decode_and_the_rest_decode(tmp_path):
    made = make_dataset(tmp_path / "d", 40, row_groups=2, corrupt=7, image_size=SMALL, rgba=0.2, seed=1)
    kinds = list(made.corrupt.values())
    assert kinds.count("null") == 1 and kinds.count("truncated") == 3 and kinds.count("garbage") == 3
    _, _, items = all_items(tmp_path / "d")
    for row, item in enumerate(items):
        kind = made.corrupt.get(row)
        if kind == "null":
            assert item is None
        elif kind:
            with pytest.raises(Exception):
                decode(item)
        else:
            decode(item)
    assert "(7 corrupt: " in made.summary()


def test_truncated_png_and_webp_fail_too(tmp_path):
    for fmt in ("PNG", "WEBP"):
        made = make_dataset(tmp_path / fmt, 6, row_groups=1, corrupt=5, format=fmt, image_size=SMALL, seed=2)
        _, _, items = all_items(tmp_path / fmt)
        for row, kind in made.corrupt.items():
            if kind != "null":
                with pytest.raises(Exception):
                    decode(items[row])


def test_realistic_sizes_and_content(tmp_path):
    made = make_dataset(tmp_path / "d", 60, row_groups=1, seed=0)
    _, _, items = all_items(tmp_path / "d")
    sizes = [decode(item).size for item in items]
    longs = [max(s) for s in sizes]
    shorts = [min(s) for s in sizes]
    assert 400 <= min(longs) and max(longs) <= 500 and min(shorts) >= 266
    assert len(set(sizes)) > 30                                   # varied
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes)  # both orientations
    lengths = np.array([len(item) for item in items])
    assert 15_000 < lengths.mean() < 120_000 and lengths.min() > 3_000   # photo-like JPEG sizes
    pixels = np.asarray(decode(items[0]).convert("RGB"), np.float32)
    neighbour = np.abs(np.diff(pixels, axis=1)).mean()
    assert 0.5 < neighbour < 20          # smooth with some noise: neither flat nor white noise
    assert pixels.std() > 20             # and there is something in the picture
    assert made.bytes > lengths.sum()


def test_more_noise_and_a_higher_quality_make_heavier_files_deterministically(tmp_path):
    # the default files (about 30 KB) are lighter than real photos of their size: these settings
    # bring them near real ones, for benchmarks of reading and decoding
    make_dataset(tmp_path / "light", 24, row_groups=1, seed=3)
    heavy = make_dataset(tmp_path / "heavy", 24, row_groups=1, seed=3, noise=5, jpeg_quality=(90, 98))
    again = make_dataset(tmp_path / "again", 24, row_groups=1, seed=3, noise=5, jpeg_quality=(90, 98))
    assert sha(heavy.files[0]) == sha(again.files[0])
    _, _, light_items = all_items(tmp_path / "light")
    _, _, heavy_items = all_items(tmp_path / "heavy")
    light, dense = np.mean([len(i) for i in light_items]), np.mean([len(i) for i in heavy_items])
    assert dense > 2.5 * light
    assert [decode(a).size for a in light_items] == [decode(b).size for b in heavy_items]  # same pictures
    assert {decode(b).format for b in heavy_items} == {"JPEG"}


def test_grayscale_rgba_and_exif_rows(tmp_path):
    make_dataset(tmp_path / "d", 30, row_groups=1, grayscale=0.2, rgba=0.1, exif_rotated=0.2, image_size=(30, 50))
    _, _, items = all_items(tmp_path / "d")
    images = [decode(item) for item in items]
    modes = [(im.mode, im.format) for im in images]
    assert modes.count(("L", "JPEG")) == 6
    assert modes.count(("RGBA", "PNG")) == 3
    rotated = [im for im in images if im.getexif().get(0x0112) == 6]
    assert 3 <= len(rotated) <= 9
    for im in rotated:
        assert im.size == (30, 50) and ImageOps.exif_transpose(im).size == (50, 30)
    rgba = [np.asarray(im)[..., 3] for im in images if im.mode == "RGBA"]
    assert all(a.min() == 0 and a.max() == 255 for a in rgba)  # transparent corners, opaque middle


def test_image_size_forms(tmp_path):
    make_dataset(tmp_path / "a", 3, row_groups=1, image_size=32)
    assert {decode(i).size for i in all_items(tmp_path / "a")[2]} == {(32, 32)}
    make_dataset(tmp_path / "b", 3, row_groups=1, image_size=(20, 30))
    assert {decode(i).size for i in all_items(tmp_path / "b")[2]} == {(30, 20)}
    make_dataset(tmp_path / "c", 12, row_groups=1, image_size=((10, 12), (700, 701)))  # wider than the tiles
    sizes = {decode(i).size for i in all_items(tmp_path / "c")[2]}
    assert {w for w, _ in sizes} <= {700, 701} and {h for _, h in sizes} <= {10, 11, 12}
    make_dataset(tmp_path / "d", 2, row_groups=1, image_size=(1, 1))
    assert decode(all_items(tmp_path / "d")[2][0]).size == (1, 1)


def test_from_folder_keeps_the_bytes_and_cycles(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    originals = {}
    for name, fmt in (("b.png", "PNG"), ("sub/a.jpg", "JPEG"), ("c.webp", "WEBP")):
        out = io.BytesIO()
        Image.new("RGB", (40, 30), (10, 200, 30)).save(out, fmt)
        (folder / name).write_bytes(out.getvalue())
        originals[name] = out.getvalue()
    (folder / "notes.txt").write_text("skip me")
    made = make_dataset(tmp_path / "d", None, row_groups=1, source_folder=folder, column_kind="binary")
    assert made.rows == 3
    _, _, items = all_items(tmp_path / "d")
    assert items == [originals["b.png"], originals["c.webp"], originals["sub/a.jpg"]]  # sorted relative paths
    made = make_dataset(tmp_path / "e", 7, row_groups=2, source_folder=folder, corrupt=1)
    cells = pq.read_table(tmp_path / "e").column("image").to_pylist()
    suffixes = ["png", "webp", "jpg"]
    for row, cell in enumerate(cells):
        if row in made.corrupt:
            assert cell is None
        else:
            assert cell["path"] == f"img-{row:06d}.{suffixes[row % 3]}"
    make_dataset(tmp_path / "f", 2, row_groups=1, source_folder=folder, column_kind="tensor", image_size=(8, 8))
    _, _, tensors = all_items(tmp_path / "f")
    assert tensors[0].shape == (8, 8, 3) and tuple(tensors[0][4, 4]) == (10, 200, 30)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=0), "rows must be a positive integer, got 0"),
    (dict(rows=None), r"rows=None needs a source folder"),
    (dict(rows=3, corrupt=4), "corrupt=4 is more than the 3 rows"),
    (dict(rows=2, files=3), "3 files for 2 rows would leave files empty"),
    (dict(column_kind="jpeg"), "column kind must be one of hf_struct, binary, tensor, got 'jpeg'"),
    (dict(format="GIF"), "format must be JPEG, PNG or WebP, got 'GIF'"),
    (dict(grayscale=1.5), "grayscale is a fraction of the rows, between 0 and 1; got 1.5"),
    (dict(grayscale=0.6, rgba=0.6), "grayscale \\+ rgba fractions exceed 1"),
    (dict(column_kind="tensor", image_size=((2, 3), (2, 3))), "a tensor column holds one fixed shape"),
    (dict(image_size=(0, 5)), "image sizes are positive integers"),
    (dict(image_size=((5, 2), (1, 2))), "a size range goes from low to high"),
    (dict(image_size="big"), "image_size is an int, \\(h, w\\) or"),
    (dict(row_groups=0), "row_groups must be a positive integer"),
    (dict(noise=0), "noise is a multiple of the default noise, above 0 and at most 20; got 0"),
    (dict(noise=21.0), "at most 20; got 21.0"),
    (dict(noise="loud"), "got 'loud'"),
    (dict(jpeg_quality=(95, 90)), r"1 <= low <= high <= 100, got \(95, 90\)"),
    (dict(jpeg_quality=(0, 90)), r"1 <= low <= high <= 100"),
    (dict(jpeg_quality=90), r"jpeg_quality is a range \(low, high\), got 90"),
])
def test_argument_errors(tmp_path, kwargs, message):
    kwargs = {"rows": 2, **kwargs}
    with pytest.raises(DatasetError, match=message):
        make_dataset(tmp_path / "d", kwargs.pop("rows"), **kwargs)


def test_output_path_errors(tmp_path):
    make_dataset(tmp_path / "d", 1, row_groups=1, image_size=8)
    with pytest.raises(DatasetError, match=r"is not empty; remove it or pass overwrite"):
        make_dataset(tmp_path / "d", 1, image_size=8)
    again = make_dataset(tmp_path / "d", 2, files=2, image_size=8, overwrite=True)
    assert open_dataset(tmp_path / "d").num_rows == 2 and len(again.files) == 2
    make_dataset(tmp_path / "x.parquet", 1, image_size=8)
    with pytest.raises(DatasetError, match=r"x\.parquet exists; remove it or pass overwrite"):
        make_dataset(tmp_path / "x.parquet", 1, image_size=8)
    with pytest.raises(DatasetError, match=r"names one file, but 2 files were asked for"):
        make_dataset(tmp_path / "y.parquet", 2, files=2, image_size=8)
    (tmp_path / "plain").write_text("")
    with pytest.raises(DatasetError, match="exists and is not a directory"):
        make_dataset(tmp_path / "plain", 1, image_size=8)


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        make_dataset(tmp_path / "d", 1, source_folder=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no images under .*empty \(looked for \.jpg"):
        make_dataset(tmp_path / "d", 1, source_folder=tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot decode .*x\.jpg to store it as a tensor"):
        make_dataset(tmp_path / "d", 1, source_folder=tmp_path / "bad", column_kind="tensor")


# -- the command ----------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    return configure_make_data_parser(argparse.ArgumentParser(prog="batchscore make-data"))


def test_cli_prints_one_summary_line(tmp_path, capsys):
    args = parser().parse_args([str(tmp_path / "d"), "--rows", "6", "--files", "2", "--row-groups", "2",
                                "--image-size", "20x30", "--corrupt", "2", "--format", "webp",
                                "--column-kind", "binary"])
    assert args.func is cmd_make_data
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("wrote 6 rows (2 corrupt: ") and "in 2 files, 4 row groups" in out[0]
    assert str(tmp_path / "d") in out[0]
    assert open_dataset(tmp_path / "d").kind == "binary"


def test_cli_defaults_to_1000_rows():
    args = parser().parse_args(["out"])
    assert (args.rows, args.files, args.row_groups, args.column_kind, args.format) == (None, 1, 4, "hf_struct", "JPEG")


@pytest.mark.parametrize("text, size", [
    ("375x500", (375, 500)), ("224", (224, 224)), ("300-500", ((300, 500), (300, 500))),
    ("300-400x500", ((300, 400), (500, 500))), ("10X20", (10, 20)),
])
def test_parse_image_size(text, size):
    assert parse_image_size(text) == size


@pytest.mark.parametrize("text", ["0x5", "5-3", "axb", "1x2x3", "-5"])
def test_parse_image_size_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_image_size(text)


def test_cli_takes_noise_and_a_quality_range(tmp_path):
    args = parser().parse_args([str(tmp_path / "d"), "--rows", "2", "--image-size", "40x60", "--noise", "3",
                                "--jpeg-quality", "90-98"])
    assert (args.noise, args.jpeg_quality) == (3.0, (90, 98))
    assert args.func(args) == 0 and open_dataset(tmp_path / "d").num_rows == 2
    defaults = parser().parse_args(["out"])
    assert (defaults.noise, defaults.jpeg_quality) == (1.0, (75, 95))


@pytest.mark.parametrize("text, value", [("75-95", (75, 95)), ("90", (90, 90)), ("1-100", (1, 100))])
def test_parse_quality(text, value):
    assert parse_quality(text) == value


@pytest.mark.parametrize("text", ["0-90", "95-90", "101", "high", "90-"])
def test_parse_quality_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_quality(text)


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["out", "--grayscale", "2"])
    assert "between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["out", "--rows", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["out", "--noise", "0"])
    assert "above 0 and at most 20" in capsys.readouterr().err
