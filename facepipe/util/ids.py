"""Item ids that are safe as file names: every stage names its per-item files by them."""
from __future__ import annotations


def safe_id(text: str) -> str:
    """A file-name-safe id: path separators and odd characters become '_'."""
    keep = "".join(c if (c.isalnum() or c in "-+_.") else "_" for c in text)
    keep = keep.strip(".") or "item"
    # Capped in UTF-8 bytes, not characters: file names are limited to 255 bytes, and an id gets
    # suffixes such as ".json" and ".overlay.png" downstream.
    return keep.encode("utf-8")[:200].decode("utf-8", "ignore")
