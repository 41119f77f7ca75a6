import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests use both cores at most and never a GPU.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def shared_path(*parts) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (it lives in ../shared beside the checkout)")
    return p


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    """A small procedurally drawn labelled set in the `folder` import format."""
    from facepipe.synthetic import write_folder_set

    return write_folder_set(tmp_path_factory.mktemp("syn") / "raw", n=12, seed=3)


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory, synthetic_set):
    """import -> align (dataset landmarks) -> cache of the synthetic set at 64 px."""
    from facepipe.align import AlignConfig, run_align
    from facepipe.cache import CacheConfig, run_cache
    from facepipe.importers import import_dataset

    root = tmp_path_factory.mktemp("chain")
    import_dataset("folder", synthetic_set, root / "imp", workers=1)
    run_align(AlignConfig(src=str(root / "imp"), out=str(root / "al"), size=64, landmarks="dataset", workers=1))
    run_cache(CacheConfig(src=str(root / "al"), out=str(root / "c.h5")))
    return root / "c.h5"
