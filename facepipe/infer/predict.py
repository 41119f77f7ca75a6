"""Running a parser on aligned crops and putting the result back onto the photo."""
from __future__ import annotations

import numpy as np
import torch

from facepipe.util.device import channels_last
from facepipe.util.geometry import warp_to_photo


class AtSide(torch.nn.Module):
    """A network run at the crop side it was trained on: crops of another side are resampled to it and
    its logits back to theirs. Fully convolutional nets would take them as they are, for faces at a scale
    they never saw; a 384 px teacher labels 256 px crops this way (distill, pseudolabel, eval) about as
    well as crops cut at 384 px (docs/results.md, "A teacher of another side")."""

    def __init__(self, net: torch.nn.Module, side: int):
        super().__init__()
        self.net, self.side = net, int(side)

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        n = x.shape[-1]
        if n == self.side:
            return self.net(x, **kw)
        return resample_batch(self.net(resample_batch(x, self.side), **kw), n)


def resample_batch(t: torch.Tensor, side: int) -> torch.Tensor:
    """(N,C,h,w) float -> (N,C,side,side), bilinear with pixel centres kept (align_corners=False, the
    mapping of data.resample.scale_matrix), antialiased when shrinking. The heatmap channel goes with the
    image: draw_heatmap's blobs scale with the crop side, so a resampled one is close to one drawn there."""
    return torch.nn.functional.interpolate(t, size=(side, side), mode="bilinear", align_corners=False,
                                           antialias=side < t.shape[-1])


@torch.no_grad()
def predict_probs(model, x: torch.Tensor, flip_perm: np.ndarray | None = None, tta_flip: bool = False,
                  autocast: bool = False, routes: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax probabilities (N,C,H,W) for a normalised input batch; optional flip test-time averaging.

    Model and batch run in channels_last (NHWC; the model is converted in place the first time): with
    BatchNorm folded, oneDNN runs our student 1.16x and the teacher 1.33x faster that way on CPU
    (`facepipe bench --fps` vs `--contiguous`). The result is returned contiguous. routes: a two-branch
    model's choice for x (models.gray_route), passed on so it is not made again (a mirror has the same).
    """
    dev_type = x.device.type
    w = next((q for q in model.parameters() if q.dim() == 4), None)
    if w is not None and not w.is_contiguous(memory_format=torch.channels_last):
        channels_last(model)  # once per model: walking every parameter on each batch costs ~0.4 ms
    x = channels_last(x)
    kw = {} if routes is None else {"routes": routes}
    with torch.autocast(dev_type, enabled=autocast and dev_type == "cuda"):
        p = torch.softmax(model(x, **kw).float(), 1)
        if tta_flip:
            pf = torch.softmax(model(x.flip(-1), **kw).float(), 1).flip(-1)
            if flip_perm is not None:
                c = p.shape[1]
                perm = torch.as_tensor(flip_perm[:c].astype(np.int64), device=p.device)
                pf = pf[:, perm]  # channel k of the mirrored view describes class perm[k]
            p = (p + pf) / 2
    return p.contiguous()


def probs_to_photo(probs: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C,s,s) crop probabilities -> (h,w,C) photo probabilities; outside the crop: background (class 0)."""
    hwc = np.ascontiguousarray(np.transpose(probs, (1, 2, 0)))
    out = warp_to_photo(hwc, matrix, shape, order=1, fill=0.0)
    covered = out.sum(-1) > 1e-6
    out[~covered, 0] = 1.0
    return out
