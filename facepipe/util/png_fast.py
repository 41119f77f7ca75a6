"""An RGB PNG writer that deflates bands of rows on several threads: `parse`'s overlay of a 24 MP photo
took 1.5 s in Pillow's single-threaded encoder, the largest step left when one big photo is parsed.

PNG (RFC 2083, ISO/IEC 15948): the signature, an IHDR chunk, the image as one zlib stream split over
IDAT chunks, IEND; every chunk is length, type, data, CRC-32 of type + data. Each row is "filtered"
before deflate; here every row uses the Up filter (each byte minus the byte above it, mod 256), which
numpy computes in one pass; on photos it gives files 5-10% smaller than Pillow's level-1 PNGs with its
per-row adaptive filters (measured on a 24 MP and two 2-3 MP photos), at half the time on one thread. The
zlib stream is cut into independent pieces: each band of rows is deflated on its own (raw deflate,
ended by a full flush, so the pieces join into one valid stream) on a thread (zlib releases the GIL
while it compresses), then the zlib header and the Adler-32 of all rows close the stream. Any PNG
reader decodes it; pixels are exact.
"""
from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDAT_BYTES = 1 << 24  # per IDAT chunk (the format allows 2**31 - 1)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def up_filtered(rgb: np.ndarray, a: int, b: int) -> np.ndarray:
    """Rows a..b-1 as (b - a) x (1 + 3W) uint8: filter type 2 (Up) and each byte minus the byte above it
    (mod 256; row 0 has nothing above, as if zeros)."""
    h, w, _ = rgb.shape
    flat = rgb.reshape(h, 3 * w)
    out = np.empty((b - a, 1 + 3 * w), np.uint8)
    out[:, 0] = 2
    if a == 0:
        out[0, 1:] = flat[0]
        np.subtract(flat[1:b], flat[:b - 1], out=out[1:, 1:])  # uint8 wraps mod 256, as the filter wants
    else:
        np.subtract(flat[a:b], flat[a - 1:b - 1], out=out[:, 1:])
    return out


def _deflate(rows: np.ndarray, last: bool, level: int) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: the one zlib header is written once
    return z.compress(rows) + z.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)


def encode_rgb_png(rgb: np.ndarray, threads: int = 2, level: int = 1) -> bytes:
    """The PNG file's bytes for an H x W x 3 uint8 image."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"need an H x W x 3 image, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    bands = np.array_split(np.arange(h), max(1, min(threads * 2, h)))
    edges = [(b[0], b[-1] + 1) for b in bands if len(b)]

    def band(k):
        a, b = edges[k]
        rows = up_filtered(rgb, a, b)
        return _deflate(rows, k == len(edges) - 1, level), zlib.adler32(rows)

    with ThreadPoolExecutor(max(1, threads)) as ex:
        parts = list(ex.map(band, range(len(edges))))
    adler = 1
    for (a, b), (_, part_adler) in zip(edges, parts):
        adler = _adler32_combine(adler, part_adler, (b - a) * (1 + 3 * w))
    stream = b"\x78\x01" + b"".join(p for p, _ in parts) + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, truecolour, deflate, adaptive, no interlace
    idat = b"".join(_chunk(b"IDAT", stream[i:i + IDAT_BYTES]) for i in range(0, len(stream), IDAT_BYTES))
    return SIGNATURE + _chunk(b"IHDR", ihdr) + idat + _chunk(b"IEND", b"")


def _adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A + B from those of A and B and B's length (zlib's adler32_combine, which Python's
    zlib does not expose)."""
    base = 65521
    rem = len2 % base
    s1 = adler1 & 0xFFFF
    s2 = (rem * s1) % base
    s1 += (adler2 & 0xFFFF) + base - 1
    s2 += ((adler1 >> 16) & 0xFFFF) + ((adler2 >> 16) & 0xFFFF) + base - rem
    s1 %= base
    s2 %= base
    return (s2 << 16) | s1


def save_rgb_png(path: Path, rgb: np.ndarray, threads: int = 2) -> None:
    Path(path).write_bytes(encode_rgb_png(rgb, threads))
