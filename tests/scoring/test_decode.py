"""scoring/decode.py: numbers against a plain Pillow + numpy reference, modes, EXIF, layouts, errors,
threads."""

from __future__ import annotations

import io

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageOps  # noqa: E402

from engine.errors import BatchscoreError  # noqa: E402
from scoring.decode import CpuDecoder, Preprocess, PreprocessError, center_crop_box, resized_size  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# ---- test images ---------------------------------------------------------------------------------
def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like HWC uint8 image: smooth gradients, an edge and some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x * 200 / width, y * 220 / height, (x + y) * 120 / (width + height) + 60], -1)
    img[height // 3 : height // 2, width // 4 : width // 2] = (250, 30, 90)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(width=400, height=350, seed=0, **kw) -> bytes:
    return encode(Image.fromarray(photo(width, height, seed)), "JPEG", quality=90, **kw)


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# ---- the reference: straightforward Pillow + numpy, as a torchvision user writes it ----------------
def reference(data: bytes, resize=256, crop=224) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img).convert("RGB")
    return reference_from_pil(img, resize, crop)


def reference_from_pil(img: Image.Image, resize=256, crop=224) -> np.ndarray:
    w, h = img.size
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    img = img.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, np.float32) / np.float32(255)
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def decode_one(data, **kw) -> np.ndarray:
    dec = CpuDecoder(Preprocess(), **kw)
    out, errors = dec.decode([data])
    assert errors == [None]
    return out[0]


def assert_close(actual, expected, atol=1e-6):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


# ---- geometry --------------------------------------------------------------------------------------
def test_resized_size_truncates_like_torchvision():
    assert resized_size(400, 350, 256) == (292, 256)  # int(256 * 400 / 350) = int(292.57)
    assert resized_size(350, 400, 256) == (256, 292)
    assert resized_size(300, 300, 256) == (256, 256)
    assert resized_size(1000, 3, 256) == (85333, 256)


def test_center_crop_box_rounds_half_to_even_and_pads_like_torchvision():
    assert center_crop_box(292, 256, 224) == (0, 0, 34, 16)
    assert center_crop_box(257, 256, 224) == (0, 0, 16, 16)  # round(16.5) == 16
    assert center_crop_box(259, 256, 224) == (0, 0, 18, 16)  # round(17.5) == 18
    assert center_crop_box(201, 300, 224) == (11, 0, 0, 38)  # pad left (224 - 201) // 2


def test_preprocess_defaults_and_shapes():
    p = Preprocess()
    assert (p.resize_shorter, p.crop, p.layout, p.dtype, p.channel_order) == (256, 224, "NCHW", "float32", "RGB")
    assert p.output_shape == (3, 224, 224)
    assert Preprocess(layout="NHWC", crop=160).output_shape == (160, 160, 3)
    assert Preprocess(mean=[0.5, 0.5, 0.5]).mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"crop": 0}, "crop must be a positive integer, got 0"),
        ({"resize_shorter": 2.5}, "resize_shorter must be a positive integer"),
        ({"mean": (0.5, 0.5)}, "mean must be a list of 3 numbers"),
        ({"std": (1, 0, 1)}, "std must not contain 0"),
        ({"layout": "CHW"}, "layout must be one of 'NCHW', 'NHWC', got 'CHW'"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"channel_order": "RGBA"}, "channel_order must be one of"),
    ],
)
def test_preprocess_rejects_bad_settings_by_name(kwargs, words):
    with pytest.raises(PreprocessError, match=words) as info:
        Preprocess(**kwargs)
    assert isinstance(info.value, BatchscoreError)


# ---- numbers against the reference -----------------------------------------------------------------
@pytest.mark.parametrize("size", [(400, 350), (350, 400), (300, 300), (640, 131), (224, 224), (90, 120), (257, 600)])
def test_rgb_jpeg_matches_reference(size):
    data = jpeg(*size, seed=size[0])
    assert_close(decode_one(data), reference(data))


def test_float32_rows_are_bit_identical_to_plain_numpy_normalize():
    data = encode(Image.fromarray(photo(300, 260)), "PNG")
    np.testing.assert_array_equal(decode_one(data), reference(data))


def _png_mode(mode: str) -> bytes:
    rgb = Image.fromarray(photo(320, 240, seed=7))
    if mode == "P":
        return encode(rgb.quantize(64), "PNG")
    if mode == "P+transparency":
        return encode(rgb.quantize(64), "PNG", transparency=3)
    if mode == "GIF":
        return encode(rgb.quantize(64), "GIF", transparency=5)
    if mode == "RGBA":
        img = rgb.convert("RGBA")
        img.putalpha(Image.linear_gradient("L").resize(img.size))
        return encode(img, "PNG")
    if mode == "LA":
        img = rgb.convert("LA")
        img.putalpha(Image.linear_gradient("L").resize(img.size))
        return encode(img, "PNG")
    if mode == "I;16":
        return encode(Image.fromarray((photo(320, 240)[..., 0].astype(np.uint16) * 3)), "PNG")
    return encode(rgb.convert(mode), "PNG")


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "P", "P+transparency", "GIF", "LA", "RGBA", "I;16"])
def test_modes_match_convert_rgb(mode):
    data = _png_mode(mode)
    assert_close(decode_one(data), reference(data))


def test_alpha_is_dropped_not_composited():
    rgba = np.zeros((230, 230, 4), np.uint8)
    rgba[..., 0] = 200  # red, fully transparent
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    row = decode_one(data)
    assert_close(row[0], np.full((224, 224), (200 / 255 - MEAN[0]) / STD[0], np.float32))


def test_grayscale_rows_have_three_equal_channels_before_normalize():
    data = encode(Image.fromarray(photo(300, 260)).convert("L"), "JPEG", quality=90)
    row = decode_one(data)
    assert_close(row, reference(data))
    raw = row * STD[:, None, None] + MEAN[:, None, None]
    assert_close(raw[0], raw[1], atol=1e-5)
    assert_close(raw[0], raw[2], atol=1e-5)


def test_cmyk_jpeg_matches_convert_rgb():
    data = encode(Image.fromarray(photo(300, 280)).convert("CMYK"), "JPEG", quality=92)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert_close(decode_one(data), reference(data))


@pytest.mark.parametrize("lossless", [True, False])
def test_webp_matches_reference(lossless):
    data = encode(Image.fromarray(photo(330, 270)), "WEBP", lossless=lossless, quality=90)
    assert_close(decode_one(data), reference(data))


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied(orientation):
    pixels = photo(300, 240, seed=orientation)
    data = encode(Image.fromarray(pixels), "PNG", exif=exif_with_orientation(orientation))
    # The same pixels, turned by hand and saved without EXIF, must give the same row.
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    expected = decode_one(encode(Image.fromarray(np.asarray(upright)), "PNG"))
    np.testing.assert_array_equal(decode_one(data), expected)
    if orientation in (5, 6, 7, 8):
        assert upright.size == (240, 300)


def test_exif_orientation_in_jpeg_matches_reference():
    data = jpeg(400, 300, exif=exif_with_orientation(6))
    assert_close(decode_one(data), reference(data))


# ---- JPEG draft (reduced-scale decoding) -----------------------------------------------------------
def test_small_jpegs_are_not_drafted():
    data = jpeg(1000, 900)  # shorter side < 4 x 256: no scale keeps >= 2x the target
    np.testing.assert_array_equal(decode_one(data), decode_one(data, jpeg_draft=False))


def test_large_jpeg_draft_stays_close_to_full_decode():
    data = jpeg(2400, 1600, seed=3)
    drafted, full = decode_one(data), decode_one(data, jpeg_draft=False)
    assert_close(full, reference(data))
    assert not np.array_equal(drafted, full)  # the draft did happen
    diff = np.abs(drafted - full) * STD[:, None, None] * 255  # in 8-bit pixel levels
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 6


# ---- layouts, dtypes, channel order ----------------------------------------------------------------
def test_layout_dtype_and_channel_order_variants():
    items = [jpeg(400, 350, seed=1), jpeg(260, 500, seed=2)]
    base, _ = CpuDecoder(Preprocess()).decode(items)

    nhwc, errors = CpuDecoder(Preprocess(layout="NHWC")).decode(items)
    assert errors == [None, None] and nhwc.shape == (2, 224, 224, 3)
    np.testing.assert_array_equal(nhwc, base.transpose(0, 2, 3, 1))

    half, _ = CpuDecoder(Preprocess(dtype="float16")).decode(items)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, base.astype(np.float16))

    half_nhwc, _ = CpuDecoder(Preprocess(dtype="float16", layout="NHWC")).decode(items)
    np.testing.assert_array_equal(half_nhwc, base.astype(np.float16).transpose(0, 2, 3, 1))

    # BGR: channels reversed; mean/std are given in the model's (BGR) order.
    bgr_p = Preprocess(channel_order="BGR", mean=tuple(MEAN[::-1]), std=tuple(STD[::-1]))
    bgr, _ = CpuDecoder(bgr_p).decode(items)
    np.testing.assert_array_equal(bgr, base[:, ::-1])
    bgr_nhwc, _ = CpuDecoder(Preprocess(channel_order="BGR", layout="NHWC", mean=bgr_p.mean, std=bgr_p.std)).decode(items)
    np.testing.assert_array_equal(bgr_nhwc, base[:, ::-1].transpose(0, 2, 3, 1))


def test_other_sizes_and_custom_normalization():
    p = Preprocess(resize_shorter=160, crop=128, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    data = jpeg(400, 350)
    out, errors = CpuDecoder(p).decode([data])
    assert errors == [None] and out.shape == (1, 3, 128, 128)
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB").resize((182, 160), Image.BILINEAR)
    expected = np.asarray(img.crop((27, 16, 155, 144)), np.float32) / np.float32(255)
    assert_close(out[0], ((expected - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1))


def test_crop_larger_than_resized_image_pads_with_zeros_like_torchvision():
    p = Preprocess(resize_shorter=200, crop=224)
    pixels = photo(100, 99)  # resized to 202 x 200; pads 11 left, 13 right, 12 top, 12 bottom
    out, errors = CpuDecoder(p).decode([encode(Image.fromarray(pixels), "PNG")])
    assert errors == [None]
    resized = np.asarray(Image.fromarray(pixels).resize((202, 200), Image.BILINEAR), np.float32) / np.float32(255)
    expected = np.zeros((224, 224, 3), np.float32)
    expected[12:212, 11:213] = resized
    assert_close(out[0], ((expected - MEAN) / STD).transpose(2, 0, 1))


def test_writes_into_a_larger_buffer_and_leaves_other_rows_alone():
    out = np.full((4, 3, 224, 224), 7.0, np.float32)
    errors = CpuDecoder(Preprocess()).decode_into([jpeg(seed=1), jpeg(seed=2)], out)
    assert errors == [None, None]
    assert_close(out[1], reference(jpeg(seed=2)))
    assert (out[2:] == 7.0).all()


def test_wrong_buffer_is_a_programming_error():
    dec = CpuDecoder(Preprocess())
    with pytest.raises(ValueError, match="shape"):
        dec.decode_into([jpeg()], np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        dec.decode_into([jpeg(), jpeg()], np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        dec.decode_into([jpeg()], np.zeros((1, 3, 224, 224), np.float16))


# ---- already-decoded tensors -----------------------------------------------------------------------
def test_decoded_arrays_at_crop_size_skip_resize():
    pixels = photo(224, 224)
    out, errors = CpuDecoder(Preprocess()).decode([pixels, pixels[..., :1], pixels[..., 0]])
    assert errors == [None, None, None]
    assert_close(out[0], ((pixels.astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1))
    gray = (pixels[..., 0].astype(np.float32)[..., None] / 255 - MEAN) / STD
    assert_close(out[1], gray.transpose(2, 0, 1))
    assert_close(out[2], gray.transpose(2, 0, 1))


def test_decoded_arrays_of_other_sizes_are_resized_and_cropped():
    pixels = photo(300, 250)
    rgba = np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 9, np.uint8)], -1)
    noncontiguous = np.asfortranarray(pixels)
    out, errors = CpuDecoder(Preprocess()).decode([pixels, rgba, noncontiguous])
    assert errors == [None, None, None]
    expected = reference_from_pil(Image.fromarray(pixels))
    for row in out:
        assert_close(row, expected)


def test_bad_decoded_arrays_give_errors():
    out, errors = CpuDecoder(Preprocess()).decode(
        [np.zeros((224, 224, 3), np.float32), np.zeros((224, 224, 2), np.uint8), np.zeros((0, 5, 3), np.uint8)]
    )
    assert "uint8" in errors[0] and "channels" in errors[1] and "zero-size" in errors[2]
    assert (out == 0).all()


# ---- errors ----------------------------------------------------------------------------------------
def test_bad_items_give_short_errors_and_other_rows_stay_right():
    good_a, good_b = jpeg(seed=11), encode(Image.fromarray(photo(260, 300, seed=12)), "PNG")
    truncated_jpeg = jpeg(seed=13)[:3000]
    truncated_png = good_b[: len(good_b) // 2]
    items = [good_a, b"not an image at all", b"", truncated_jpeg, None, good_b, truncated_png, 42, bytearray(good_a)]
    out = np.full((len(items), 3, 224, 224), 5.0, np.float32)
    errors = CpuDecoder(Preprocess()).decode_into(items, out)
    assert errors[0] is None and errors[5] is None and errors[8] is None
    assert errors[1] == "cannot identify image file"
    assert errors[2] == "empty image data"
    assert errors[3].startswith("image file is truncated") and "JPEG" in errors[3]
    assert errors[4] == "missing image (null value)"
    assert errors[6].startswith("image file is truncated") and "PNG" in errors[6]
    assert "int" in errors[7]
    for i in (1, 2, 3, 4, 6, 7):
        assert (out[i] == 0).all(), f"row {i} of a failed item is not zero-filled"
        assert len(errors[i]) < 120 and "\n" not in errors[i] and " at 0x" not in errors[i]
    assert_close(out[0], reference(good_a))
    assert_close(out[5], reference(good_b))
    assert_close(out[8], reference(good_a))


def test_corrupt_jpeg_body_never_raises():
    data = bytearray(jpeg(seed=21))
    rng = np.random.default_rng(0)
    for _ in range(8):
        bad = bytearray(data)
        idx = rng.integers(200, len(bad), 40)
        bad[idx[0] : idx[0] + 200] = bytes(200)
        for i in idx[1:]:
            bad[i] = rng.integers(0, 256)
        out, errors = CpuDecoder(Preprocess()).decode([bytes(bad)])
        assert errors[0] is None or isinstance(errors[0], str)


# ---- threads ---------------------------------------------------------------------------------------
def test_thread_pool_matches_single_thread():
    items = [jpeg(300 + 7 * i, 260 + 11 * i, seed=i) for i in range(10)]
    items[3] = b"garbage"
    items[6] = None
    items.append(photo(224, 224, seed=99))
    single, single_errors = CpuDecoder(Preprocess(), threads=1).decode(items)
    with CpuDecoder(Preprocess(), threads=4) as dec:
        for _ in range(2):  # the pool is reused across batches
            pooled, pooled_errors = dec.decode(items)
            assert pooled_errors == single_errors
            np.testing.assert_array_equal(pooled, single)
    auto = CpuDecoder(Preprocess(), threads=None)
    assert auto.threads >= 1
    assert auto.decode(items)[1] == single_errors
    auto.close()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("junk", [b"Exif\x00\x00II*\x00\xff\xff\xff\x7f", b"Exif\x00\x00garbage"])
def test_unreadable_exif_keeps_the_image(junk):
    data = encode(Image.fromarray(photo(300, 260)), "JPEG", quality=90, exif=junk)
    assert_close(decode_one(data), reference(data))
