"""Atomic writes give outputs the mode a plain open() would (0666 less the umask), not mkstemp's 0600:
parse results, checkpoints, ONNX files and caches are as readable as any other file the user makes."""
import os
import stat

import numpy as np
import pytest
import torch

from facepipe.util.atomic import atomic_path, current_umask, save_image, write_bytes, write_json, write_text


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_follows_os_umask(umask):
    assert current_umask() == umask


def test_atomic_writes_follow_the_umask(umask, tmp_path):
    want = 0o666 & ~umask
    write_bytes(tmp_path / "a.bin", b"x")
    write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "sub" / "a.json", {"a": 1})
    save_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    save_image(tmp_path / "a.jpg", np.zeros((4, 4, 3), np.uint8))
    with atomic_path(tmp_path / "b.bin") as tmp:  # a writer that recreates the temporary name
        os.unlink(tmp)
        tmp.write_bytes(b"y")
    (tmp_path / "old.bin").write_bytes(b"0")
    os.chmod(tmp_path / "old.bin", 0o600)
    write_bytes(tmp_path / "old.bin", b"1")  # replaced: a new file, with the umask's mode
    files = ["a.bin", "a.txt", "sub/a.json", "a.png", "a.jpg", "b.bin", "old.bin"]
    assert {f: oct(mode(tmp_path / f)) for f in files} == {f: oct(want) for f in files}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({f.split("/")[0] for f in files})  # no temp left


def test_checkpoint_follows_the_umask(umask, tmp_path):
    from facepipe.infer.checkpoint import load_checkpoint, save_checkpoint
    from facepipe.util.schema import FASSEG

    save_checkpoint(tmp_path / "checkpoints" / "last.pt", torch.nn.Conv2d(4, FASSEG.num_classes, 1), arch="x",
                    schema=FASSEG, size=8, heatmap=True)
    assert oct(mode(tmp_path / "checkpoints" / "last.pt")) == oct(0o666 & ~umask)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["size"] == 8


def test_onnx_export_follows_the_umask(umask, tmp_path):
    pytest.importorskip("onnx")
    from facepipe.infer.export import export_model

    export_model(torch.nn.Conv2d(3, 2, 1), 3, 8, tmp_path / "m.onnx")
    assert oct(mode(tmp_path / "m.onnx")) == oct(0o666 & ~umask)


def test_cache_follows_the_umask(umask, tmp_path, synthetic_cache):
    from facepipe.data.cache import CacheConfig, run_cache

    # The aligned folder the session's synthetic cache was made from (tests/conftest.py).
    run_cache(CacheConfig(src=str(synthetic_cache.parent / "al"), out=str(tmp_path / "c.h5"), photo_labels=False))
    outputs = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # .lock files are not outputs
    assert outputs and {p.name: oct(mode(p)) for p in outputs} == {p.name: oct(0o666 & ~umask) for p in outputs}
