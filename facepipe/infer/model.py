"""One loaded model: what eval, bench, export, pseudolabel, distill and parse hold after reading a run,
a checkpoint file or a bundled name. It carries everything needed to feed the network the way it was
trained: label schema, alignment spec, heatmap channel; and predicts probabilities on input batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facepipe.infer.checkpoint import build_from_checkpoint, load_checkpoint, run_checkpoint, training_augment
from facepipe.infer.photo_fill import resolve as resolve_fill
from facepipe.infer.predict import AtSide, predict_probs
from facepipe.learn.augment import saw_grayscale
from facepipe.models.fold import fold_batchnorm
from facepipe.models.gray_route import GRAY_SATURATION, GrayRoute
from facepipe.util.align_spec import AlignSpec
from facepipe.util.device import pick_device
from facepipe.util.manifest import file_sha256
from facepipe.util.schema import LabelSchema


@dataclass
class LoadedModel:
    net: nn.Module
    schema: LabelSchema
    align: AlignSpec
    heatmap: bool
    arch: str
    path: Path
    checkpoint: dict = field(repr=False)
    device: torch.device = torch.device("cpu")

    @classmethod
    def load(cls, run_or_file, which: str = "best", device: str = "cpu", fold: bool = False) -> "LoadedModel":
        """A run folder (its `which` checkpoint), a checkpoint file or a bundled name (`default`, `fast`,
        `accurate`), in eval mode on `device`. fold=True folds BatchNorm into the convolutions: the same
        function, one memory pass less per conv (inference only)."""
        path = run_checkpoint(run_or_file, which)
        return cls.from_checkpoint(load_checkpoint(path), path, device, fold)

    @classmethod
    def from_checkpoint(cls, ck: dict, path, device: str = "cpu", fold: bool = False) -> "LoadedModel":
        net, schema = build_from_checkpoint(ck)
        gb = ck.get("gray_branch")
        if gb:  # a second network for grayscale faces (models.gray_route; infer.pack --gray)
            own = {k: gb[k] for k in ("arch", "model_kwargs", "state_dict") if k in gb}
            net = GrayRoute(net, build_from_checkpoint(dict(ck, **own))[0], float(gb.get("threshold", GRAY_SATURATION)),
                            gb.get("toned"))  # None in files packed before toned photos were routed
        if fold:
            net = fold_batchnorm(net)
        dev = pick_device(device) if isinstance(device, str) else device
        return cls(net.to(dev).eval(), schema, AlignSpec.from_dict(ck.get("align"), int(ck["size"])),
                   bool(ck["heatmap"]), ck["arch"], Path(path), ck, dev)

    @property
    def size(self) -> int:
        return int(self.checkpoint["size"])

    @property
    def in_channels(self) -> int:
        return 4 if self.heatmap else 3

    @property
    def fill(self) -> str:
        """What this model sees beyond the photo: "edge" or "black" (infer.photo_fill)."""
        return resolve_fill("model", self.checkpoint)

    @property
    def augment(self) -> str | None:
        """The training augmentation ("none", "basic", "wild", maybe with fields set: "wild,gray=0"), or
        None when the checkpoint does not say (files packed before it was kept)."""
        return training_augment(self.checkpoint)

    @property
    def saw_grayscale(self) -> bool | None:
        """Whether training showed the network grayscale faces (the wild recipe does, and a gray branch
        sees nothing else); None: unknown."""
        return True if self.gray_branch else saw_grayscale(self.augment)

    @property
    def gray_branch(self) -> dict | None:
        """The grayscale branch's facts (arch, model_kwargs, threshold, recipe, epoch, metrics: what
        infer.pack stored, less its weights), or None for a one-branch model."""
        gb = self.checkpoint.get("gray_branch")
        return None if not gb else {k: v for k, v in gb.items() if k != "state_dict"}

    def branches(self) -> list[tuple[str, nn.Module]]:
        """[("color", net)] or, with a gray branch, [("color", ...), ("gray", ...)]: the networks as
        export writes them, one ONNX file each."""
        if isinstance(self.net, GrayRoute):
            return [("color", self.net.color), ("gray", self.net.gray)]
        return [("color", self.net)]

    def routes_gray(self, x: torch.Tensor) -> np.ndarray | None:
        """(N,) bool: which faces of a normalised batch the gray branch takes; None for a one-branch model."""
        if not isinstance(self.net, GrayRoute):
            return None
        return self.net.routes(x.to(self.device)).cpu().numpy()

    def sha256(self) -> str:
        return file_sha256(self.path)

    def predict(self, x: torch.Tensor, tta_flip: bool = False, autocast: bool = False) -> torch.Tensor:
        """Softmax probabilities (N,C,H,W) of a normalised input batch (data.face_cache.to_input);
        autocast: fp16 on CUDA (eval and pseudolabel use it; distill's targets on labelled faces do not)."""
        flip = self.schema.flip_permutation() if tta_flip else None
        return predict_probs(self.net, x.to(self.device), flip, tta_flip, autocast=autocast)

    def predict_at_own_side(self, x: torch.Tensor, tta_flip: bool = False, autocast: bool = False) -> torch.Tensor:
        """`predict` on crops of any side, the network run at its own (infer.predict.AtSide)."""
        flip = self.schema.flip_permutation() if tta_flip else None
        return predict_probs(AtSide(self.net, self.size), x.to(self.device), flip, tta_flip, autocast=autocast)

    def predict_routed(self, x: torch.Tensor, tta_flip: bool = False,
                       routes_from: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
        """`predict` and `routes_gray` with the branch chosen once (parse records each face's branch).
        routes_from: the batch the router reads when x is not the crops as cut (infer.photo_fill)."""
        x = x.to(self.device)
        if not isinstance(self.net, GrayRoute):
            return self.predict(x, tta_flip), None
        g = self.net.routes(x if routes_from is None else routes_from.to(self.device))
        flip = self.schema.flip_permutation() if tta_flip else None
        return predict_probs(self.net, x, flip, tta_flip, routes=g), g.cpu().numpy()

    def predict_uint8(self, x: torch.Tensor, tta_flip: bool = False) -> np.ndarray:
        """Probabilities stored as uint8 (p * 255, rounded): the pseudo-label format; at x's side
        (`predict_at_own_side`)."""
        return np.rint(self.predict_at_own_side(x, tta_flip).cpu().numpy() * 255).astype(np.uint8)
