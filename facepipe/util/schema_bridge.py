"""Scoring a model on a dataset labelled with other classes: both renamed into the classes they share.

A model trained on FASSEG (background, hair, skin, eyes, nose, mouth) scored on CelebAMask-HQ, Helen,
LaPa or LFW-PL: each side's class names are looked up in one shared vocabulary (WORDS: CelebAMask-HQ's
l_eye and Helen's left_eye are both "eyes"; u_lip, inner_mouth and FASSEG's mouth are all "mouth"),
and a word only one side has folds into its parent (PARENT) until both sides have it: the brows are
FASSEG's hair, ears and neck its skin, CelebAMask-HQ's cloth background; against LFW-PL (skin, hair,
background) a model's eyes, nose and mouth are skin. What folds is said in `Bridge.note`, since it
decides what the figures mean.

Classes with no counterpart at all (CelebAMask-HQ's glasses, hat, earrings, necklace) are not scored
in the labels (IGNORE) and count as background in a model's answer: the dataset says those pixels are
something the other side never names. Pixels one dataset labels and another leaves in a broader class
(a neck that a dataset calls background, say) cannot be separated by renaming; they count as errors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facepipe.util.errors import FacepipeError
from facepipe.util.schema import IGNORE, LabelSchema

# class name (any bundled schema's) -> shared word; None: no counterpart in any other dataset
WORDS = {
    "background": "background", "hair": "hair", "skin": "skin", "eyes": "eyes", "nose": "nose", "mouth": "mouth",
    "left_brow": "brows", "right_brow": "brows", "l_brow": "brows", "r_brow": "brows",
    "left_eye": "eyes", "right_eye": "eyes", "l_eye": "eyes", "r_eye": "eyes",
    "upper_lip": "mouth", "inner_mouth": "mouth", "lower_lip": "mouth", "u_lip": "mouth", "l_lip": "mouth",
    "l_ear": "ears", "r_ear": "ears", "neck": "neck", "cloth": "cloth",
    "eye_g": None, "hat": None, "ear_r": None, "neck_l": None,
}
# the broader word each folds into (FASSEG labels brows as hair, ears and neck as skin)
PARENT = {"brows": "hair", "eyes": "skin", "nose": "skin", "mouth": "skin", "ears": "skin", "neck": "skin",
          "cloth": "background"}
ORDER = ("background", "hair", "skin", "brows", "eyes", "nose", "mouth", "ears", "neck", "cloth")
COLOURS = {"background": (255, 0, 0), "hair": (127, 0, 0), "skin": (255, 255, 0), "brows": (153, 51, 0),
           "eyes": (0, 0, 255), "nose": (0, 255, 255), "mouth": (0, 255, 0), "ears": (255, 153, 102),
           "neck": (204, 153, 0), "cloth": (128, 128, 128)}
PARTS = ("brows", "eyes", "nose", "mouth")  # pooled into the common classes' overall F1 where both have them


@dataclass(frozen=True)
class Bridge:
    schema: LabelSchema  # the shared classes the scores are in
    pred: np.ndarray  # 256 uint8: model class id -> shared id
    true: np.ndarray  # 256 uint8: dataset class id -> shared id or IGNORE
    note: str  # what was renamed, folded or left out, in one line


def bridge(model: LabelSchema, data: LabelSchema) -> Bridge | None:
    """None when both schemas have the same classes (nothing to rename); else the Bridge between them.
    A FacepipeError names the classes no shared word is known for."""
    if tuple(model.classes) == tuple(data.classes):
        return None
    unknown = [c for c in dict.fromkeys(model.classes + data.classes) if c not in WORDS]
    if unknown:
        raise FacepipeError(f"the model's classes ({', '.join(model.classes)}) and the cache's "
                            f"({', '.join(data.classes)}) differ, and {', '.join(unknown)} has no known counterpart "
                            "(names are matched to those of FASSEG, Helen, LaPa, LFW-PL and CelebAMask-HQ): "
                            "score this model on a cache with its own classes, or name them so in schema.json.")
    mine, theirs = _words(model), _words(data)
    shared = _shared(mine, theirs)
    names = tuple(w for w in ORDER if w in set(shared.values()))
    parts = tuple(w for w in PARTS if w in names)
    schema = LabelSchema(name=f"{model.name}~{data.name}", classes=names, colors=tuple(COLOURS[w] for w in names),
                         overall=parts or tuple(w for w in names if w != "background"))
    pred = _lut(model.classes, shared, names, missing=names.index("background"))
    true = _lut(data.classes, shared, names, missing=IGNORE)
    note = (f"the model's classes ({model.name}) and the cache's ({data.name}) differ: scored in the "
            f"{len(names)} they share ({', '.join(names)}); " + _folds(model, data, shared) + ".")
    return Bridge(schema, pred, true, note)


def _words(schema: LabelSchema) -> set[str]:
    return {WORDS[c] for c in schema.classes if WORDS[c] is not None}


def _shared(mine: set[str], theirs: set[str]) -> dict[str, str]:
    """word -> the word both sides have that it folds into (itself when both have it)."""
    both = mine & theirs
    out = {}
    for w in mine | theirs:
        up = w
        while up not in both:
            if up not in PARENT:
                raise FacepipeError(f"no shared class to score '{w}' in: the two label sets have nothing in common "
                                    "above it.")
            up = PARENT[up]
        out[w] = up
    return out


def _lut(classes, shared: dict[str, str], names: tuple[str, ...], missing: int) -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    for i, c in enumerate(classes):
        w = WORDS[c]
        lut[i] = names.index(shared[w]) if w is not None else missing
    return lut


def _folds(model: LabelSchema, data: LabelSchema, shared: dict[str, str]) -> str:
    """"cache's l_ear, r_ear -> skin; ..." for every class whose shared class is a broader one."""
    said = []
    for side, schema in (("the model's", model), ("the cache's", data)):
        moves: dict[str, list[str]] = {}
        for c in schema.classes:
            w = WORDS[c]
            to = "background" if w is None and side == "the model's" else (shared[w] if w else "not scored")
            if to != c:
                moves.setdefault(to, []).append(c)
        said += [f"{side} {', '.join(cs)} -> {to}" for to, cs in moves.items()]
    return "; ".join(said) if said else "nothing folded"
