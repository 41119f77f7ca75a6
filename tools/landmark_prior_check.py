"""How FASSEG's own labels sit against the landmark prior's rules (facepipe/infer/landmark_prior.py):
for every labelled part blob, its distance (in inter-ocular distances) to the convex hull of its
landmarks, what the labels say inside the inner lip contour, and how many labelled pixels the prior
would change if the network answered exactly the labels. Sets REACH_IOD and checks the mouth rule.

    python tools/landmark_prior_check.py data/fasseg-hc-b2.0-t4.h5 data/fasseg-persons-hc-t4.h5
"""
import sys

import h5py
import numpy as np
from scipy import ndimage

from facepipe.infer.landmark_prior import INNER_LIPS, PART_POINTS, LandmarkPrior, hull_distance, polygon_mask
from facepipe.util.schema import FASSEG


def main(paths):
    schema = FASSEG
    names = list(schema.classes)
    for path in paths:
        f = h5py.File(path, "r")
        far, inner_counts, faces = {}, np.zeros(len(names), np.int64), 0
        prior, overwritten, labelled = LandmarkPrior(schema), 0, 0
        for j in np.flatnonzero(f["n_landmarks"][:] == 68):
            lab, pts = f["labels"][j], f["landmarks"][j]
            iod = np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0))
            faces += 1
            for c in names:
                if c not in PART_POINTS:
                    continue
                k = names.index(c)
                blobs, n = ndimage.label(lab == k, structure=np.ones((3, 3), bool))
                if not n:
                    continue
                yx = np.argwhere(blobs > 0)
                d = hull_distance(pts[list(PART_POINTS[c])], yx) / iod
                ids = blobs[yx[:, 0], yx[:, 1]]
                mins = np.array([d[ids == b].min() for b in range(1, n + 1)])
                sizes = np.bincount(ids, minlength=n + 1)[1:]
                far.setdefault(c, []).extend(zip(mins, sizes))
            # The prior laid over the truth itself (one-hot): what it would overwrite of a perfect answer.
            onehot = (np.arange(len(names))[:, None, None] == lab[None]).astype(np.float32)
            overwritten += prior.apply(onehot, pts)
            labelled += int((lab < len(names)).sum())
            inside = polygon_mask(pts[list(INNER_LIPS)], lab.shape)
            inner_counts += np.bincount(lab[inside & (lab < len(names))], minlength=len(names))
        print(f"{path}: {faces} faces with 68 landmarks")
        for c, v in far.items():
            v = np.array(v)
            print(f"  {c:6s} blobs {len(v):4d}; farthest from its hull {v[:, 0].max():.3f} IOD "
                  f"(blobs beyond 0.1: {int((v[:, 0] > 0.1).sum())}, their pixels {int(v[v[:, 0] > 0.1, 1].sum())})")
        tot = max(1, inner_counts.sum())
        print("  inside the inner lip contour: " + ", ".join(f"{n} {c / tot:.2%}" for n, c in zip(names, inner_counts)
                                                         if c) + f" ({tot} pixels)")
        print(f"  the prior laid over the labels themselves changes {overwritten} of {labelled} pixels "
              f"({overwritten / max(1, labelled):.4%})")


if __name__ == "__main__":
    main(sys.argv[1:])
