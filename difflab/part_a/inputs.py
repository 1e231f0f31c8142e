"""The images Part A edits: test images, a "web" image, code-drawn sketches, and whatever a user drops in
`inputs/images/` (with optional `<name>.mask.png` inpainting masks). Everything is (C, S, S) in [0, 1]."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from difflab.data.images import read_image, read_mask
from difflab.data.mnist import load_mnist
from difflab.pipeline.params import ParamsError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MASK_TAG = ".mask"
SUPERSAMPLE = 4  # drawings are rendered 4x larger, then downsampled, for anti-aliased strokes

Stroke = tuple[tuple[float, float, float], float, Sequence[tuple[float, float]]]  # rgb, width, points (unit square)


@dataclass(frozen=True)
class EditImage:
    """An image to edit, with its inpainting mask (1 = regenerate) when it has one."""
    name: str
    image: torch.Tensor
    mask: torch.Tensor | None = None


def box_mask(size: int, box: Sequence[float]) -> torch.Tensor:
    """(1, S, S) mask that is 1 inside box = (top, left, bottom, right) given as fractions of the side."""
    top, left, bottom, right = (round(f * size) for f in box)
    mask = torch.zeros(1, size, size)
    mask[:, top:bottom, left:right] = 1.0
    return mask


def _to_tensor(img: Image.Image, channels: int) -> torch.Tensor:
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.reshape(*arr.shape[:2], channels).transpose(2, 0, 1).copy())


def font_digit(text: str, size: int = 28, channels: int = 1) -> torch.Tensor:
    """Text in PIL's default font, white on black, scaled into the central 20/28 of the frame like MNIST digits."""
    font = ImageFont.load_default(size=8 * size)
    left, top, right, bottom = font.getbbox(text)
    glyph = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(glyph).text((-left, -top), text, fill=255, font=font)
    box = round(size * 20 / 28)
    scale = box / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.LANCZOS)
    canvas = Image.new("L", (size, size))
    canvas.paste(glyph, ((size - glyph.width) // 2, (size - glyph.height) // 2))
    return _to_tensor(canvas, channels)


def drawing(strokes: Sequence[Stroke], size: int, channels: int, background: float) -> torch.Tensor:
    """A sketch of polylines in the unit square, drawn with PIL ImageDraw and anti-aliased by supersampling."""
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), (round(255 * background),) * 3)
    pen = ImageDraw.Draw(canvas)
    for rgb, width, points in strokes:
        colour = tuple(round(255 * c) for c in rgb)
        w = max(1, round(width * big))
        xy = [(x * big, y * big) for x, y in points]
        pen.line(xy, fill=colour, width=w, joint="curve")
        for x, y in xy:  # round caps
            pen.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=colour)
    return _to_tensor(canvas.resize((size, size), Image.BOX), channels)


def _mask_file(image: Path) -> Path | None:
    masks = [p for p in image.parent.glob(f"{image.stem}{MASK_TAG}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return masks[0] if masks else None


def user_images(directory: str | Path, size: int, channels: int, dark_background: bool) -> list[EditImage]:
    """Every image in `directory` (sorted by name), with `<stem>.mask.<ext>` beside it as its inpainting mask.

    Files without an image suffix are skipped with a warning; an image or mask that cannot be read, or a mask
    whose size differs from its image's, raises ImageError naming the file. With dark_background (MNIST's white
    digits on black), light-background images are inverted.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    mode = "L" if channels == 1 else "RGB"
    found = []
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.name.startswith(".") or path.stem.endswith(MASK_TAG):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            if path.name != "README.txt":
                log.warning("skipping %s: not an image (expected one of %s)", path, ", ".join(sorted(IMAGE_SUFFIXES)))
            continue
        full = read_image(path, mode)
        image = read_image(path, mode, size)
        if dark_background and image.mean() > 0.5:
            image = 1 - image
        mask = None
        if (mask_path := _mask_file(path)) is not None:
            read_mask(mask_path, tuple(full.shape[1:]))  # same size as its image, or a clear ImageError
            mask = (read_image(mask_path, "L", size) > 0.5).float()
        found.append(EditImage(path.stem, image, mask))
    return found



# Two hand-drawn sevens (the MNIST backbone's photo prompt is a 7): a plain one and a European one with a bar.
SEVENS: tuple[tuple[Stroke, ...], ...] = (
    (((1, 1, 1), 0.1, [(0.28, 0.26), (0.72, 0.24), (0.5, 0.55), (0.4, 0.8)]),),
    (((1, 1, 1), 0.09, [(0.25, 0.3), (0.45, 0.24), (0.74, 0.26), (0.6, 0.5), (0.48, 0.8)]),
     ((1, 1, 1), 0.08, [(0.4, 0.52), (0.76, 0.5)])),
)
# Two colour sketches on white for RGB backbones: a house under the sun, and a tree.
SKETCHES: tuple[tuple[Stroke, ...], ...] = (
    (((0.7, 0.1, 0.1), 0.04, [(0.2, 0.5), (0.5, 0.22), (0.8, 0.5)]),
     ((0.2, 0.2, 0.6), 0.04, [(0.25, 0.5), (0.25, 0.85), (0.75, 0.85), (0.75, 0.5)]),
     ((0.4, 0.25, 0.1), 0.04, [(0.45, 0.85), (0.45, 0.65), (0.57, 0.65), (0.57, 0.85)]),
     ((0.95, 0.75, 0.1), 0.05, [(0.85, 0.1), (0.92, 0.15), (0.9, 0.24), (0.82, 0.24), (0.79, 0.15), (0.85, 0.1)])),
    (((0.45, 0.3, 0.1), 0.08, [(0.5, 0.9), (0.5, 0.5)]),
     ((0.1, 0.55, 0.15), 0.07, [(0.5, 0.15), (0.75, 0.3), (0.78, 0.5), (0.5, 0.6), (0.22, 0.5), (0.25, 0.3),
                                (0.5, 0.15)]),
     ((0.1, 0.5, 0.1), 0.03, [(0.0, 0.92), (1.0, 0.88)])),
)


@dataclass(frozen=True)
class PartAImages:
    """test: the test image and two more (A.1.1-1.7, 1.7.2, 1.7.3); web + drawn + user: A.1.7.1."""
    test: list[EditImage]
    web: EditImage
    drawn: list[EditImage]
    user: list[EditImage]


def mnist_images(mnist_root: str | Path, indices: Sequence[int], web_text: str, box: Sequence[float],
                 images_dir: str | Path) -> PartAImages:
    """MNIST test-set digits, a font-rendered digit as the web image, two drawn sevens, and the user's images."""
    x, _ = load_mnist(mnist_root, train=False)
    if max(indices) >= len(x):
        raise ParamsError(f"part_a.mnist.test_indices: {max(indices)} is past the {len(x)} MNIST test images; "
                          f"use indices below {len(x)}")
    mask = box_mask(28, box)
    test = [EditImage(f"MNIST test #{i}", x[i], mask) for i in indices]
    drawn = [EditImage(f"drawn {k + 1}", drawing(s, 28, 1, background=0.0)) for k, s in enumerate(SEVENS)]
    return PartAImages(test, EditImage(f"font {web_text!r}", font_digit(web_text)), drawn,
                       user_images(images_dir, 28, 1, dark_background=True))


def library_images(library: str | Path, names: Sequence[str], web_name: str, size: int, box: Sequence[float],
                   images_dir: str | Path) -> PartAImages:
    """RGB test images and a web image from a picture library directory (name.png / name.jpg), two colour
    sketches, and the user's images."""
    library = Path(library)

    def pick(name: str) -> Path:
        files = sorted(p for p in library.glob(f"{name}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ParamsError(f"part_a.deepfloyd: no image named {name!r} in {library}; choose one of "
                              + ", ".join(sorted({p.stem for p in library.iterdir() if p.suffix in IMAGE_SUFFIXES})))
        return files[0]

    mask = box_mask(size, box)
    test = [EditImage(n, read_image(pick(n), "RGB", size), mask) for n in names]
    drawn = [EditImage(f"drawn {k + 1}", drawing(s, size, 3, background=1.0)) for k, s in enumerate(SKETCHES)]
    return PartAImages(test, EditImage(web_name, read_image(pick(web_name), "RGB", size)), drawn,
                       user_images(images_dir, size, 3, dark_background=False))


def part_a_images(params: dict, mnist_root: str | Path, images_dir: str | Path, image_size: int) -> PartAImages:
    """The images for params' part_a.backbone: MNIST digits for mnist, scikit-image's sample photos otherwise."""
    a = params["part_a"]
    if a["backbone"] == "mnist":
        m = a["mnist"]
        return mnist_images(mnist_root, m["test_indices"], m["web_text"], m["inpaint_box"], images_dir)
    import skimage.data

    d = a["deepfloyd"]
    return library_images(Path(skimage.data.__file__).parent, d["test_images"], d["web_image"], image_size,
                          d["inpaint_box"], images_dir)
