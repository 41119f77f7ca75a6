import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests use both cores at most and never a GPU.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# A shell starts background jobs (`pytest &`, `nohup ... &`) with Ctrl-C ignored, and processes inherit
# that: the Ctrl-C tests would then see nothing arrive. Python's own handler is what a terminal gives;
# processes started from here get SIGINT's default back on exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_path(*parts) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (it lives in ../shared beside the checkout)")
    return p


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    """A small procedurally drawn labelled set in the `folder` import format."""
    from facepipe.data.synthetic import write_folder_set

    return write_folder_set(tmp_path_factory.mktemp("syn") / "raw", n=12, seed=3)


def synthetic_chain(root: Path, synthetic_set, size: int) -> Path:
    """import -> align (dataset landmarks) -> cache of the synthetic set at `size` px, under `root`."""
    from facepipe.data.align import AlignConfig, run_align
    from facepipe.data.cache import CacheConfig, run_cache
    from facepipe.data.importers import import_dataset

    import_dataset("folder", synthetic_set, root / "imp", workers=1)
    run_align(AlignConfig(src=str(root / "imp"), out=str(root / "al"), size=size, landmarks="dataset", workers=1))
    run_cache(CacheConfig(src=str(root / "al"), out=str(root / "c.h5")))
    return root / "c.h5"


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory, synthetic_set):
    """The synthetic set's cache at 64 px."""
    return synthetic_chain(tmp_path_factory.mktemp("chain"), synthetic_set, 64)


# The tiny run most tests share: teacher-small, one epoch of cross entropy on synthetic_cache's 9 training
# faces, no validation and no final eval (about a second). A test that needs other settings builds its
# own with train_tiny(out, **changes) and says only what it changes.
TINY_RUN = dict(arch="teacher-small", epochs=1, loss="ce", val_split="none", device="cpu", threads=1, final_eval="")


@pytest.fixture(scope="session")
def train_tiny(synthetic_cache):
    """train_tiny(out, reporter=None, **changes) trains TINY_RUN with `changes` (any TrainConfig field,
    cache= included) on synthetic_cache into `out` and returns `out` as a Path."""
    from facepipe.learn.train import TrainConfig, train

    def run(out, reporter=None, **changes):
        fields = {**TINY_RUN, "cache": synthetic_cache, **changes}
        cfg = TrainConfig(**{**fields, "cache": str(fields["cache"]), "out": str(out)})
        train(cfg) if reporter is None else train(cfg, reporter)
        return Path(out)

    return run


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, train_tiny):
    """The tiny run, trained once per session and shared by every module: read it, never write into it
    (a rerun of `train`, pseudolabel's default output TEACHER/pseudo/ or eval's default sheet would).
    Tests that write into a run take `tiny_run_copy`. At the end of the session the run must be as trained."""
    run = train_tiny(tmp_path_factory.mktemp("tiny_run") / "t")
    before = _listing(run)
    yield run
    changed = sorted(set(before.items()) ^ set(_listing(run).items()))
    assert not changed, f"a test wrote into the shared tiny_run (take tiny_run_copy): {changed}"


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    """This test's own copy of the tiny run, free to write into."""
    return Path(shutil.copytree(tiny_run, tmp_path / "tiny_run"))


# `facepipe demo` at the smallest sizes that still run every step (the real demo: 48 + 24 faces, 64 px).
DEMO_ARGS = ["--faces", "8", "--unlabelled", "4", "--size", "64", "--epochs", "1", "--student-epochs", "1"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`facepipe demo OUT *DEMO_ARGS` once per session (15-24 s on 2 shared cores): tests/test_demo.py
    checks what it wrote and its rerun, tests/test_cli_chain.py takes it as the chain's last stage.
    Returns .out (the folder), .args (the command line after `demo`) and .result (click's Result)."""
    from click.testing import CliRunner

    from facepipe.cli import cli

    out = tmp_path_factory.mktemp("demo") / "demo"
    args = [str(out), *DEMO_ARGS]
    return SimpleNamespace(out=out, args=args, result=CliRunner().invoke(cli, ["demo", *args]))


def parse_astronaut(root: Path, runs: dict) -> Path:
    """scikit-image's astronaut saved into root/p and parsed with the bundled model once per entry of
    runs ({output folder name: extra parse options}); returns root. For tests that compare parse's
    outputs with an option on and off."""
    from click.testing import CliRunner
    from skimage import data

    from facepipe.cli import cli
    from facepipe.util.atomic import save_image

    save_image(root / "p" / "a.png", data.astronaut())
    for name, extra in runs.items():
        r = CliRunner().invoke(cli, ["parse", str(root / "p"), "--out", str(root / name), "-q", "--device", "cpu",
                                     *extra])
        assert r.exit_code == 0, r.output
    return root


def photo_area(src):
    """Masks of the crop pixels wholly inside (inside) and wholly outside (outside) each face's photo in
    the open cache file `src`, found the way align found them: an all-white photo of each face's size
    warped with its matrix. For tests of what the black fill beyond a photo teaches."""
    import numpy as np

    from facepipe.util.geometry import warp_image

    size = src["images"].shape[1]
    white = [warp_image(np.full((int(h), int(w), 3), 255, np.uint8), m, size)[..., 0]
             for m, (h, w) in zip(src["matrices"][:], src["photo_size"][:])]
    return np.stack([w == 255 for w in white]), np.stack([w == 0 for w in white])
