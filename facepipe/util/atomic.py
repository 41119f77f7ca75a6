"""Atomic writes: a file is either absent or complete, never half written.

Everything is written to a temporary name in the same folder and moved into place with
os.replace, which is atomic on POSIX within one filesystem. The file moved into place gets the mode a
plain open() would have given it (0666 less the umask), not mkstemp's private 0600.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    except OSError as e:
        raise _named(e, path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        # Set on the finished file, whatever the writer did with the name (some libraries recreate it).
        _chmod_like_open(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and tmp in (str(e.filename), str(e.filename2)):
            raise _named(e, path) from None
        raise


def _named(e: OSError, path: Path) -> OSError:
    """The error with the user's path in place of the temporary name: the temp file is gone, and the user
    never named it (the CLI prints the error's filename)."""
    if e.errno is None:
        return e
    return type(e)(e.errno, e.strerror, str(path))


def _umask_from_proc() -> int | None:
    """The umask as Linux reports it (4.7+), read without changing it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_setting() -> int:
    # os.umask can only be read by setting it, and for that instant a file another thread creates gets 022
    # instead of the real umask: done once, at import, before facepipe starts threads of its own.
    old = os.umask(0o022)
    os.umask(old)
    return old


_IMPORT_UMASK = _umask_from_proc()
_PROC_UMASK = _IMPORT_UMASK is not None
if not _PROC_UMASK:
    _IMPORT_UMASK = _umask_by_setting()


def current_umask() -> int:
    """The process umask: read from /proc at every call where Linux shows it (thread-safe, and it follows
    a later os.umask), else the one at import."""
    m = _umask_from_proc() if _PROC_UMASK else None
    return _IMPORT_UMASK if m is None else m


def _chmod_like_open(path) -> None:
    try:
        os.chmod(path, 0o666 & ~current_umask())
    except OSError:
        # A filesystem without POSIX modes (vfat, some network mounts) keeps its own default; a file that
        # is really unusable fails in os.replace next, with the error worth reporting.
        pass


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


# The names save_image writes in the format they say; any other suffix gets PNG.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def save_image(path, image, format: str | None = None) -> None:
    """Save a PIL image (or HxW[xC] uint8 array) atomically; the format follows the suffix (IMAGE_SUFFIXES)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
    # PNG level 1: several times faster than the default, files ~10-20% larger.
    image.save(buf, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {"quality": 95}))
    write_bytes(path, buf.getvalue())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
