"""User images and masks for Part A, decoded with one clear error per bad file (the path and the fix)."""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from difflab.pipeline.errors import DifflabError

MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 50_000_000


class ImageError(DifflabError, ValueError):
    """A user image that cannot be read; the message names the path and the fix."""

# Everything PIL's decoders are known to raise on hostile input, so no deep PIL traceback reaches the user.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, MemoryError, struct.error, zlib.error,
                  IndexError, KeyError, TypeError, ArithmeticError, RuntimeError)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# Full-scale value per high-bit-depth mode: 16-bit gray (PIL may open it as "I") and float taken as [0,1].
_HIGH_BIT_DEPTH_SCALE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0,
                         "I": 65535.0, "F": 1.0}


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image; point to a PNG or JPEG file inside it")
    if not path.exists():
        raise ImageError(f"image not found: {path}; check the path (relative paths start at the repo root)")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes); re-export or re-copy the image")


def _check_dimensions(path: Path, width: int, height: int) -> None:
    """Refuse empty or huge images from the header alone, before any pixel is decoded."""
    if width < 1 or height < 1:
        raise ImageError(f"{path} has no pixels ({width}x{height}); re-export the image")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{path} is {width}x{height} pixels, over the limit of {MAX_IMAGE_SIDE} px a side and "
                         f"{MAX_IMAGE_PIXELS:,} px in all; downscale it (e.g. to 1024 px) first")


def _decode(path: Path, mode: str) -> np.ndarray:
    """Decode with PIL to an H×W×C float32 array in [0,1]; alpha is composited on white."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            _check_dimensions(path, *im.size)
            im = ImageOps.exif_transpose(im)
            if im.mode in _HIGH_BIT_DEPTH_SCALE:
                gray = np.asarray(im, dtype=np.float64) / _HIGH_BIT_DEPTH_SCALE[im.mode]
                gray = np.clip(np.nan_to_num(gray), 0.0, 1.0).astype(np.float32)[..., None]
                return gray if mode == "L" else np.repeat(gray, 3, axis=2)
            if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im.convert("RGBA"))
            if im.mode not in ("1", "L", "RGB", "RGBA"):
                im = im.convert("RGB")
            pixels = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
            return pixels[..., None] if mode == "L" else pixels


def _center_square_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Center-crop C×H×W to a square, then resize to size×size with antialiasing."""
    _, h, w = x.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, top:top + side, left:left + side]
    if side == size:
        return x
    x = F.interpolate(x[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
    return x.clamp_(0.0, 1.0)


def read_image(path: str | os.PathLike, mode: str = "RGB", size: int | None = None) -> torch.Tensor:
    """Read any PIL-readable image as float C×H×W in [0,1] (C=1 for "L", 3 for "RGB"); bad files raise ImageError."""
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    path = Path(path)
    _check_file(path)
    try:
        pixels = _decode(path, mode)
    except ImageError:
        raise
    except _BOMB_ERRORS as e:
        raise ImageError(f"{path} is too large to decode safely ({e}); downscale it (e.g. to 1024 px) first") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{path} is not an image PIL can read ({e}); save it as PNG or JPEG") from e
    except _DECODE_ERRORS as e:
        raise ImageError(f"{path} could not be decoded ({type(e).__name__}: {e}); the file is truncated or "
                         "corrupt; re-export it as PNG") from e
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    return x if size is None else _center_square_resize(x, size)


def read_mask(path: str | os.PathLike, size: int | tuple[int, int]) -> torch.Tensor:
    """Read an inpainting mask as bool H×W (white = region to regenerate); it must already be the image's size."""
    height, width = (size, size) if isinstance(size, int) else size
    mask = read_image(path, mode="L")[0]
    if tuple(mask.shape) != (height, width):
        raise ImageError(f"{path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but the mask must be "
                         f"{width}x{height} to match the image; resize the mask")
    return mask > 0.5
