"""Dataset landmark files (LaPa style: first token N, then N "x y" pairs), read by the importers and by
`align --landmarks dataset`, and the guarded small-text reader they go through."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from facepipe.util.atomic import write_text
from facepipe.util.errors import BadImage


def read_landmark_txt(path) -> np.ndarray:
    """LaPa-style landmark file: first token N, then N 'x y' pairs."""
    try:
        toks = read_small_text(path).split()
        count = float(toks[0])
        if not (np.isfinite(count) and count >= 0 and count == int(count)):  # "INF", "-3", "2.5": not a count
            raise ValueError(toks[0])
        n = int(count)
        pts = np.array([float(t) for t in toks[1: 1 + 2 * n]], np.float64).reshape(n, 2)
    except (OSError, ValueError, IndexError, OverflowError):
        raise BadImage(f"{Path(path).name}: unreadable landmark file") from None
    return pts


def write_landmark_txt(path, points) -> None:
    """The file read_landmark_txt reads, written atomically: N, then N "x y" lines (3 decimals)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    write_text(path, f"{len(pts)}\n" + "".join(f"{x:.3f} {y:.3f}\n" for x, y in pts))


def read_small_text(path, limit: int = 1 << 20) -> str:
    """A small text file (landmarks, split lists), refusing FIFOs, devices and huge files: a symlink
    to /dev/zero or a named pipe would otherwise hang the import. Raises OSError."""
    with open(path, "rb", opener=lambda p, fl: os.open(p, fl | os.O_NONBLOCK)) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{Path(path).name} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{Path(path).name} is larger than {limit} bytes")
    return data.decode("utf-8", errors="replace")
