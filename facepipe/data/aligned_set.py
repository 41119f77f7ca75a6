"""The reader of an `align` output folder: its faces.jsonl, one record per aligned face (photo id and
path, split, 3x3 photo->crop matrix, fitted flag, box, score, landmarks in crop pixels, photo size,
image and label paths inside the folder). `align` writes it; `cache` reads it."""
from __future__ import annotations

import json
from pathlib import Path


def read_faces(folder) -> list[dict]:
    return [json.loads(l) for l in (Path(folder) / "faces.jsonl").read_text().splitlines() if l.strip()]
