"""Label schemas: one object per dataset, saved as schema.json next to every artifact.

A schema names the classes (index = label id), gives display colours, the left/right pairs that swap
under horizontal flip, merged groups scored as one class (rows and columns of the confusion matrix
summed) and the classes pooled into the dataset's "overall" F1. Id 255 means "ignore".
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facepipe.util.atomic import write_text
from facepipe.util.errors import FacepipeError

IGNORE = 255


@dataclass(frozen=True)
class LabelSchema:
    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    flip_pairs: tuple[tuple[str, str], ...] = ()
    groups: dict = field(default_factory=dict)  # merged name -> tuple of class names
    overall: tuple[str, ...] = ()  # pooled into one "overall" F1 (Helen protocol)
    headline: str = "overall_f1"  # which figure the dataset's papers report first

    def __post_init__(self):
        if len(self.classes) != len(self.colors):
            raise ValueError("one colour per class")
        if len(self.classes) > 255:
            raise ValueError("at most 255 classes (255 is the ignore id)")
        names = set(self.classes)
        for a, b in self.flip_pairs:
            if a not in names or b not in names:
                raise ValueError(f"flip pair {a}/{b} names an unknown class")
        for g, members in self.groups.items():
            if not set(members) <= names:
                raise ValueError(f"group {g} names an unknown class")
        if not set(self.overall) <= names:
            raise ValueError("overall names an unknown class")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, name: str) -> int:
        return self.classes.index(name)

    def flip_permutation(self) -> np.ndarray:
        """perm[id] = id of the class that `id` becomes when the image is mirrored."""
        perm = np.arange(256, dtype=np.uint8)
        for a, b in self.flip_pairs:
            ia, ib = self.index(a), self.index(b)
            perm[ia], perm[ib] = ib, ia
        return perm

    def palette(self) -> np.ndarray:
        """256x3 uint8 colour table (ignore and unused ids are black)."""
        pal = np.zeros((256, 3), np.uint8)
        pal[: self.num_classes] = np.array(self.colors, np.uint8)
        return pal

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return self.palette()[labels]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["groups"] = {k: list(v) for k, v in self.groups.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSchema":
        try:
            return cls(
                name=str(d["name"]),
                classes=tuple(d["classes"]),
                colors=tuple(tuple(int(c) for c in col) for col in d["colors"]),
                flip_pairs=tuple(tuple(p) for p in d.get("flip_pairs", ())),
                groups={k: tuple(v) for k, v in d.get("groups", {}).items()},
                overall=tuple(d.get("overall", ())),
                headline=d.get("headline", "overall_f1"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FacepipeError(f"invalid label schema: {e}") from None

    def save(self, path) -> None:
        write_text(path, self.to_json() + "\n")


def load_schema(path) -> LabelSchema:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise FacepipeError(f"schema file {path} not found.") from None
    except ValueError as e:
        raise FacepipeError(f"schema file {path} is not valid JSON ({e}).") from None
    return LabelSchema.from_dict(d)


FASSEG = LabelSchema(
    name="fasseg",
    classes=("background", "hair", "skin", "eyes", "nose", "mouth"),
    # The release's own colours, so overlays look like the dataset's label images.
    colors=((255, 0, 0), (127, 0, 0), (255, 255, 0), (0, 0, 255), (0, 255, 255), (0, 255, 0)),
    overall=("eyes", "nose", "mouth"),
)

_HELEN_CLASSES = ("background", "skin", "left_brow", "right_brow", "left_eye", "right_eye",
                  "nose", "upper_lip", "inner_mouth", "lower_lip", "hair")
_HELEN_COLORS = ((0, 0, 0), (255, 204, 153), (153, 51, 0), (204, 102, 0), (0, 102, 255), (0, 204, 255),
                 (255, 153, 0), (255, 0, 102), (153, 0, 153), (204, 0, 51), (102, 51, 0))
_HELEN_GROUPS = {"brows": ("left_brow", "right_brow"), "eyes": ("left_eye", "right_eye"),
                 "mouth": ("upper_lip", "inner_mouth", "lower_lip")}
_LR = (("left_brow", "right_brow"), ("left_eye", "right_eye"))

HELEN = LabelSchema(
    name="helen", classes=_HELEN_CLASSES, colors=_HELEN_COLORS, flip_pairs=_LR, groups=_HELEN_GROUPS,
    overall=("left_brow", "right_brow", "left_eye", "right_eye", "nose", "upper_lip", "inner_mouth",
             "lower_lip"),
)

LAPA = LabelSchema(
    name="lapa", classes=_HELEN_CLASSES, colors=_HELEN_COLORS, flip_pairs=_LR, groups=_HELEN_GROUPS,
    overall=_HELEN_CLASSES[1:], headline="mean_f1",
)

LFW_PL = LabelSchema(
    name="lfw-pl",
    classes=("background", "skin", "hair"),
    colors=((0, 0, 255), (0, 255, 0), (255, 0, 0)),
    overall=("skin", "hair"), headline="pixel_acc",
)

CELEBAMASK_HQ = LabelSchema(
    name="celebamask-hq",
    classes=("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
             "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"),
    colors=((0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204),
            (0, 255, 255), (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0),
            (0, 0, 153), (0, 0, 204), (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51),
            (0, 204, 0)),
    flip_pairs=(("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear")),
    groups={"eyes": ("l_eye", "r_eye"), "brows": ("l_brow", "r_brow"), "ears": ("l_ear", "r_ear"),
            "lips": ("mouth", "u_lip", "l_lip")},
    overall=("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
             "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"),
    headline="mean_f1",
)
