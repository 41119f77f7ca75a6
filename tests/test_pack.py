"""Packing a run as a bundled model: weights, schema and alignment only; --fp16 halves the file."""
import torch

from facepipe.infer.checkpoint import build_from_checkpoint, load_checkpoint, run_checkpoint
from facepipe.infer.pack import pack


def test_pack_keeps_outputs_and_fp16_halves_the_weights(tmp_path, tiny_run):
    run = tiny_run
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    pack(run, full)
    pack(run, half, fp16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    ck = load_checkpoint(half)
    assert ck["stored_dtype"] == "float16" and "optimizer" not in ck
    assert all(v.dtype in (torch.float16, torch.int64) for v in ck["state_dict"].values())
    x = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    outs = {}
    for name, path in (("run", run_checkpoint(run)), ("full", full), ("half", half)):
        model, _ = build_from_checkpoint(load_checkpoint(path))
        assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 storage, fp32 compute
        with torch.no_grad():
            outs[name] = model.eval()(x)
    assert torch.equal(outs["run"], outs["full"])
    err = (outs["half"] - outs["run"]).abs().max() / outs["run"].abs().max()
    assert 0 < err < 1e-2
