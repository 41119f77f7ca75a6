"""The photos a stage works on: an imported dataset (its items.jsonl) or any folder of photos."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from facepipe.util.errors import FacepipeError
from facepipe.util.ids import safe_id
from facepipe.util.images import IMAGE_SUFFIXES, list_images, unreadable_note
from facepipe.util.manifest import MANIFEST, read_manifest


@dataclass(frozen=True)
class Photo:
    id: str
    path: str  # absolute
    split: str = "unlabeled"
    label: str | None = None  # absolute path of the uint8 id label, if any
    landmarks: str | None = None  # absolute path of dataset landmarks, if any


def list_photos(folder) -> tuple[list[Photo], dict | None]:
    """Photos of an imported (or pasted) set (with labels and splits) or of a plain folder, and its manifest."""
    folder = Path(folder)
    if not folder.exists():
        raise FacepipeError(f"input {folder} does not exist.")
    if not folder.is_dir():
        raise FacepipeError(f"input {folder} is not a folder.")
    if (folder / MANIFEST).exists() or (folder / "items.jsonl").exists():
        man = read_manifest(folder, ("import", "paste"))  # paste writes the same layout
        photos = []
        for line in (folder / "items.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            photos.append(Photo(
                id=r["id"], path=str((folder / r["image"]).resolve()), split=r.get("split", ""),
                label=str((folder / r["label"]).resolve()) if r.get("label") else None,
                landmarks=str((folder / r["landmarks"]).resolve()) if r.get("landmarks") else None))
        return photos, man
    files = list_images(folder)
    if not files:
        n = len(files.dangling)
        broken = f"; skipped {n} dangling link{'s' * (n != 1)}, e.g. {files.dangling[0].name}" if n else ""
        formats = unreadable_note(files.unreadable)
        formats = f"; {formats}" if formats else ""
        raise FacepipeError(f"no images found in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
                            f"{broken}{formats}.")
    photos, seen = [], set()
    for p in files:
        rel = p.relative_to(folder.resolve()) if p.is_absolute() else p.relative_to(folder)
        iid = safe_id(rel.with_suffix("").as_posix().replace("/", "__"))
        while iid in seen:
            iid += "_"
        seen.add(iid)
        photos.append(Photo(id=iid, path=str(p.resolve())))
    return photos, None
