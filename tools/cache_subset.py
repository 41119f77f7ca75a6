"""Copy the first N faces of a facepipe cache (every per-face dataset, all attributes) into OUT.

Usage: python tools/cache_subset.py CACHE.h5 OUT.h5 N   (for quick measurements on part of a cache)
"""
import sys

import h5py

src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with h5py.File(src, "r") as f, h5py.File(out, "w") as g:
    for k, a in f.attrs.items():
        g.attrs[k] = a
    for k in f:
        d = f[k]
        if isinstance(d, h5py.Dataset) and d.shape and d.shape[0] == f["images"].shape[0]:
            g.create_dataset(k, data=d[:n], chunks=d.chunks, compression=d.compression,
                             compression_opts=d.compression_opts)
        else:
            f.copy(d, g, k)
