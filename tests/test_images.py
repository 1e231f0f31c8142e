"""User image reading: exact conversions, and any bytes at all give a valid image or an ImageError, nothing else."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from difflab.data.images import ImageError, read_image, read_mask

FUZZ = settings(max_examples=50, deadline=None)
pytestmark = [pytest.mark.unit,
              pytest.mark.filterwarnings("ignore::UserWarning:PIL")]  # PIL's notes on the corrupt files we feed it


def png_bytes(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save_args)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR claiming width×height and no pixel data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def write(tmp_path, blob: bytes, name: str = "image.png"):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def assert_valid(x: torch.Tensor, mode: str) -> None:
    assert x.dtype == torch.float32 and x.ndim == 3 and x.shape[0] == (1 if mode == "L" else 3)
    assert x.shape[1] >= 1 and x.shape[2] >= 1
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


def read_or_image_error(path, mode: str, size=None) -> None:
    """The property: a correct image or ImageError; any other exception fails the test."""
    try:
        x = read_image(path, mode=mode, size=size)
    except ImageError as e:
        assert str(path) in str(e)
        return
    assert_valid(x, mode)
    if size is not None:
        assert x.shape[1:] == (size, size)


@st.composite
def small_images(draw) -> Image.Image:
    """Small PIL images in the modes users hand in: gray, RGB, RGBA, palette, 16-bit, CMYK, bilevel."""
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "LA", "1"]))
    width, height = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "P": 1, "LA": 2, "1": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    base = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    return base.convert(mode) if mode in ("P", "1") else base


@FUZZ
@given(blob=st.binary(max_size=512), mode=st.sampled_from(["L", "RGB"]))
def test_random_bytes_give_image_or_image_error(tmp_path_factory, blob, mode):
    read_or_image_error(write(tmp_path_factory.getbasetemp(), blob, "random.bin"), mode)


@FUZZ
@given(prefix=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"BM", b"II*\x00", b"P5\n"]),
       tail=st.binary(max_size=256), mode=st.sampled_from(["L", "RGB"]))
def test_random_bytes_behind_a_magic_number_give_image_or_image_error(tmp_path_factory, prefix, tail, mode):
    read_or_image_error(write(tmp_path_factory.getbasetemp(), prefix + tail, "magic.bin"), mode)


@FUZZ
@given(image=small_images(), cut=st.floats(0, 1), mode=st.sampled_from(["L", "RGB"]),
       size=st.sampled_from([None, 4]))
def test_truncated_pngs_give_image_or_image_error(tmp_path_factory, image, cut, mode, size):
    blob = png_bytes(image)
    path = write(tmp_path_factory.getbasetemp(), blob[: int(len(blob) * cut)], "cut.png")
    read_or_image_error(path, mode, size)


@FUZZ
@given(image=small_images(), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1,
                                            max_size=4),
       fmt=st.sampled_from(["PNG", "GIF", "BMP", "TIFF", "JPEG"]), mode=st.sampled_from(["L", "RGB"]))
def test_corrupted_files_give_image_or_image_error(tmp_path_factory, image, flips, fmt, mode):
    buffer = io.BytesIO()
    (image if fmt in ("PNG", "TIFF") else image.convert("RGB")).save(buffer, fmt)
    blob = bytearray(buffer.getvalue())
    for where, xor in flips:
        blob[int(where * (len(blob) - 1))] ^= xor
    read_or_image_error(write(tmp_path_factory.getbasetemp(), bytes(blob), f"flipped.{fmt.lower()}"), mode)


@FUZZ
@given(image=small_images(), mode=st.sampled_from(["L", "RGB"]))
def test_valid_images_in_every_mode_read_with_their_size(tmp_path_factory, image, mode):
    x = read_image(write(tmp_path_factory.getbasetemp(), png_bytes(image), "valid.png"), mode=mode)
    assert_valid(x, mode)
    assert x.shape[1:] == (image.height, image.width)


@FUZZ
@given(width=st.integers(0, 2**31 - 1), height=st.integers(0, 2**31 - 1))
def test_any_header_dimensions_give_image_or_image_error(tmp_path_factory, width, height):
    read_or_image_error(write(tmp_path_factory.getbasetemp(), png_header_only(width, height), "header.png"), "L")


@pytest.mark.parametrize("width, height", [(9000, 9000), (10000, 1), (20000, 20000)])
def test_huge_dimensions_are_refused_before_decoding(tmp_path, width, height):
    with pytest.raises(ImageError, match=r"image\.png .*downscale"):
        read_image(write(tmp_path, png_header_only(width, height)))


def test_rgba_transparent_pixel_becomes_white_and_half_alpha_blends(tmp_path):
    pixels = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 128]]], np.uint8)
    x = read_image(write(tmp_path, png_bytes(Image.fromarray(pixels, "RGBA"))))
    assert x[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert x[:, 0, 1].tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(x[:, 0, 2], torch.full((3,), 127 / 255), atol=1.5 / 255)
    assert read_image(write(tmp_path, png_bytes(Image.fromarray(pixels, "RGBA"))), mode="L")[0, 0, 0] == 1.0


def test_palette_transparency_becomes_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    image.putpixel((1, 0), 1)
    x = read_image(write(tmp_path, png_bytes(image, transparency=0)))
    assert x[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert torch.allclose(x[:, 0, 1], torch.tensor([10, 20, 30]) / 255)


def test_16_bit_grayscale_scales_to_unit_range(tmp_path):
    values = np.array([[0, 32768, 65535]], np.uint16)
    path = write(tmp_path, png_bytes(Image.fromarray(values)))
    x = read_image(path, mode="L")
    assert x[0, 0].tolist() == pytest.approx([0.0, 32768 / 65535, 1.0])
    assert x[0, 0, 2] == 1.0
    assert torch.equal(read_image(path, mode="RGB"), x.expand(3, -1, -1))


def test_gray_to_rgb_repeats_and_rgb_to_gray_uses_luma(tmp_path):
    gray = read_image(write(tmp_path, png_bytes(Image.new("L", (1, 1), 100))), mode="RGB")
    assert gray[:, 0, 0].tolist() == pytest.approx([100 / 255] * 3)
    luma = read_image(write(tmp_path, png_bytes(Image.new("RGB", (1, 1), (10, 200, 30)))), mode="L")
    assert luma[0, 0, 0].item() == pytest.approx((10 * 0.299 + 200 * 0.587 + 30 * 0.114) / 255, abs=1 / 255)


def test_cmyk_jpeg_and_float_and_int_images(tmp_path):
    cmyk = io.BytesIO()
    Image.new("CMYK", (2, 2), (0, 0, 0, 0)).save(cmyk, "JPEG", quality=100)
    assert torch.allclose(read_image(write(tmp_path, cmyk.getvalue(), "c.jpg")), torch.ones(3, 2, 2), atol=2 / 255)
    floats = io.BytesIO()
    Image.fromarray(np.array([[0.25, 2.0]], np.float32)).save(floats, "TIFF")
    assert read_image(write(tmp_path, floats.getvalue(), "f.tif"), mode="L")[0, 0].tolist() == [0.25, 1.0]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("L", (3, 2), 0)
    image.putpixel((0, 0), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated 90° counter-clockwise: display turns it clockwise
    x = read_image(write(tmp_path, png_bytes(image, exif=exif)), mode="L")
    assert x.shape == (1, 3, 2)
    assert x[0, 0, 1] == 1.0 and x.sum() == 1.0


def test_resize_center_crops_to_square(tmp_path):
    pixels = np.zeros((20, 40), np.uint8)
    pixels[:, 10:30] = 255
    x = read_image(write(tmp_path, png_bytes(Image.fromarray(pixels))), mode="RGB", size=8)
    assert x.shape == (3, 8, 8)
    assert torch.allclose(x, torch.ones_like(x))


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", "not found"),
    (lambda d: d, "is a directory"),
    (lambda d: write(d, b"", "empty.png"), "empty"),
    (lambda d: write(d, b"hello, not an image\n" * 10, "text.png"), "not an image"),
    (lambda d: write(d, png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:-30], "cut.png"), "truncated"),
])
def test_bad_files_raise_image_error_with_path_and_fix(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_mask_is_white_region_and_must_match_size(tmp_path):
    pixels = np.zeros((4, 6), np.uint8)
    pixels[1:3, 2:5] = 255
    path = write(tmp_path, png_bytes(Image.fromarray(pixels)), "mask.png")
    mask = read_mask(path, (4, 6))
    assert mask.dtype == torch.bool and torch.equal(mask, torch.from_numpy(pixels > 0))
    with pytest.raises(ImageError, match=r"6x4.*5x5"):
        read_mask(path, 5)
