"""Reading photos and label maps safely.

Every way a real photo can surprise us is handled here once: EXIF rotation (applied, so labels and
landmarks agree with what a viewer shows), grayscale / palette / CMYK / 16-bit / alpha images
(converted to 8-bit RGB), and corrupt, truncated or absurdly large files (refused with BadImage, which
stages count per image instead of crashing).
"""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from facepipe.util.errors import BadImage

# Truncated files must fail, not decode as grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Decompression bombs: refuse anything over this many pixels (a 64-megapixel photo passes).
MAX_PIXELS = int(os.environ.get("FACEPIPE_MAX_PIXELS", 80_000_000))

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp",
                  ".gif", ".avif"}
# Photos a folder listing skips because Pillow cannot decode them here (HEIC needs a plugin, camera raw a
# raw developer): listed so the user hears why their iPhone or camera folder yields nothing.
UNREADABLE_PHOTO_SUFFIXES = {".heic", ".heif", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2",
                             ".pef", ".srw"}


class ImageList(list):
    """list_images' paths, plus `dangling`: the image-named links it skipped because they lead nowhere,
    and `unreadable`: photos in formats facepipe cannot decode (UNREADABLE_PHOTO_SUFFIXES)."""

    def __init__(self, paths=(), dangling=(), unreadable=()):
        super().__init__(paths)
        self.dangling = list(dangling)
        self.unreadable = list(unreadable)


def unreadable_note(files: list[Path]) -> str:
    """One line on the photos a listing skipped for their format ("" for none)."""
    if not files:
        return ""
    kinds = sorted({p.suffix.lower() for p in files})
    return (f"skipped {len(files)} photo{'s' * (len(files) != 1)} in a format facepipe cannot read "
            f"({', '.join(kinds)}; e.g. {files[0].name}): convert them to JPEG or PNG first")


def list_images(folder, outside_links: bool = True) -> ImageList:
    """Image files directly in `folder` or below, sorted, hidden files skipped.

    Links to files are followed wherever they point: a folder of links is a common way to pick a subset
    of photos kept elsewhere, and reading through a link is harmless (stages write only under their
    OUT, never beside a photo). `outside_links=False` keeps only links that resolve inside `folder`.
    Links that lead nowhere (dangling, a loop, a target we may not stat) are skipped and listed in
    `.dangling`. Linked folders are not entered (rglob does not follow them), so a loop cannot hang the
    walk; a link to a FIFO or device is no regular file and is skipped (_open would refuse it too).
    """
    folder = Path(folder).resolve()
    out, dangling, unreadable = [], [], []
    for p in sorted(folder.rglob("*")):
        if p.name.startswith("."):
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            if p.suffix.lower() in UNREADABLE_PHOTO_SUFFIXES and _is_file(p):
                unreadable.append(p)
            continue
        if not _is_file(p):
            # os.path.exists is False for a missing target, a loop and a target we may not stat alike.
            if p.is_symlink() and not os.path.exists(p):
                dangling.append(p)
            continue
        if not outside_links and p.is_symlink() and not _inside(p.resolve(), folder):
            continue
        out.append(p)
    return ImageList(out, dangling, unreadable)


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # Path.is_file lets PermissionError through (a link into a folder we may not enter)
        return False


def _inside(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def _open(path) -> Image.Image:
    path = Path(path)
    try:
        # A FIFO or device named like a photo (or a symlink to one) would block or never end.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise BadImage(f"{path.name}: not a regular file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            im = Image.open(path)
            if im.width * im.height > MAX_PIXELS:
                raise BadImage(f"{path.name}: {im.width}x{im.height} is larger than {MAX_PIXELS} pixels")
            im.load()
            return im
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage(f"{path.name}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{path.name}: image too large (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise BadImage(f"{path.name}: not an image or corrupt") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage(f"{path.name}: unreadable ({_first_line(e)})") from None
    except Exception as e:  # fuzzed files reach decoder bugs (struct.error, IndexError...): still one bad image
        raise BadImage(f"{path.name}: unreadable ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def to_rgb8(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.int64)
        hi = a.max() if a.size else 0
        a = (a >> 8) if hi > 255 else a
        return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
        return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # photos with alpha: composite on white
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if im.mode == "RGB":
        return _rgb_strips(im)
    return np.asarray(im.convert("RGB"))  # L, P, CMYK, YCbCr, 1, ...


def _rgb_strips(im: Image.Image) -> np.ndarray:
    """np.asarray(im), writable, converted a strip of rows at a time: Pillow holds RGB at 4 bytes a
    pixel and a whole-image export adds two more copies (230 MB over the photo for 24 MP, 195 this way)."""
    w, h = im.size
    a = np.empty((h, w, 3), np.uint8)
    rows = max(1, (1 << 22) // max(1, w))
    for y in range(0, h, rows):
        a[y:y + rows] = np.asarray(im.crop((0, y, w, min(h, y + rows))))
    return a


def load_rgb(path) -> np.ndarray:
    """A photo as HxWx3 uint8 RGB, EXIF orientation applied."""
    im = _open(path)
    try:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # no copy of the photo when it is upright
    except Exception:  # a broken EXIF block must not lose the photo
        pass
    a = to_rgb8(im)
    if a.ndim != 3 or a.shape[0] < 8 or a.shape[1] < 8:
        raise BadImage(f"{Path(path).name}: image is too small ({a.shape[1]}x{a.shape[0]})")
    return np.ascontiguousarray(a)


def load_rgb_raw(path) -> np.ndarray:
    """RGB without EXIF rotation: for colour-coded label images, which are never rotated by viewers."""
    return np.ascontiguousarray(to_rgb8(_open(path)))


def load_ids(path) -> np.ndarray:
    """A single-channel label-id image as HxW uint8 (palette images give their indices)."""
    im = _open(path)
    if im.mode == "P":
        a = np.asarray(im)
    elif im.mode in ("L", "1"):
        a = np.asarray(im.convert("L"))
    elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.int64)
        if a.size and a.max() > 255:
            raise BadImage(f"{Path(path).name}: label ids above 255")
        a = a.astype(np.uint8)
    elif im.mode in ("RGB", "RGBA"):
        rgb = np.asarray(im.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise BadImage(f"{Path(path).name}: label image is colour, expected single-channel ids")
        a = rgb[..., 0]
    else:
        raise BadImage(f"{Path(path).name}: unsupported label image mode {im.mode}")
    return np.ascontiguousarray(a, dtype=np.uint8)


def nearest_palette(rgb: np.ndarray, palette: np.ndarray, max_dist: float = 100.0, max_far: float = 0.02,
                    name: str = "label") -> np.ndarray:
    """Map each pixel of a noisy colour-coded label image to the nearest palette colour's index.

    Real releases (FASSEG) blend colours along class boundaries (hair/skin gives ~(191,128,0)), so a
    few pixels far from every class colour are normal and go to the nearest one. More than `max_far`
    of the image farther than `max_dist` (Euclidean, 0-255 units) means the wrong dataset or a corrupt
    label, and is an error.
    """
    pal = np.asarray(palette, np.int64)
    flat = rgb.reshape(-1, 3).astype(np.int64)
    # Unique colours via one packed integer key: label images have few colours, so this is fast.
    key = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    uc = np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], 1)
    d2 = ((uc[:, None, :] - pal[None, :, :]) ** 2).sum(-1)
    idx = d2.argmin(1)
    far = d2[np.arange(len(uniq)), idx] > max_dist ** 2
    n_far = int(counts[far].sum())
    if n_far > max_far * len(key):
        c = tuple(int(v) for v in uc[far][counts[far].argmax()])
        raise BadImage(f"{name}: {n_far} pixels ({100 * n_far / len(key):.1f}%) have colours such as {c}, "
                       "far from every class colour of this dataset")
    return idx[inverse.ravel()].astype(np.uint8).reshape(rgb.shape[:2])
