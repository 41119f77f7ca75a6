"""`bench`: speed rows side by side with the baseline, MACs counted from the real layers."""
import json

import pytest
import torch
from click.testing import CliRunner

from facepipe.bench import BASELINE, BenchConfig, arch_entry, bench_speed
from facepipe.cli import cli
from facepipe.macs import count_macs, count_params

KEYS = {"model", "size", "batch", "fps", "latency_ms_p50", "latency_ms_p95", "params", "macs", "ratio_to_baseline"}
TINY = dict(sizes=(64,), batches=(1,), threads=1, seconds=0.05, min_iters=2, warmup=1)


def test_bench_rows_side_by_side_with_the_baseline():
    entries = [arch_entry(n) for n in ("teacher-small", "student-tiny", BASELINE)]
    rows = bench_speed(entries, BenchConfig(**TINY))
    assert [r["model"] for r in rows] == ["teacher-small", "student-tiny", BASELINE]
    for r in rows:
        assert KEYS <= set(r)
        assert r["size"] == 64 and r["batch"] == 1 and r["iters"] >= 2 and r["fps"] > 0
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p95"]
        assert r["macs"] > 0 and r["params"] > 0
        assert r["backend"] == "torch" and r["threads"] == 1 and r["device"].startswith("cpu")
    by = {r["model"]: r for r in rows}
    assert by[BASELINE]["ratio_to_baseline"] == 1.0
    assert by["student-tiny"]["ratio_to_baseline"] == pytest.approx(by["student-tiny"]["fps"] / by[BASELINE]["fps"])
    assert by["student-tiny"]["params"] == count_params(entries[1].model)
    assert by["student-tiny"]["macs"] < by["teacher-small"]["macs"] < by[BASELINE]["macs"]


def test_count_macs_of_one_conv():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.zeros(1, 3, 10, 10)) == 10 * 10 * 8 * 3 * 9
    grouped = torch.nn.Conv2d(4, 8, 3, padding=1, groups=2)
    assert count_macs(grouped, torch.zeros(1, 4, 10, 10)) == 10 * 10 * 8 * 2 * 9
    assert count_macs(torch.nn.Linear(5, 7), torch.zeros(2, 5)) == 2 * 7 * 5


def test_bench_cli_writes_json(tmp_path):
    out = tmp_path / "x.json"
    r = CliRunner().invoke(cli, ["bench", "--fps", "--arch", "student-tiny", "--size", "64", "--seconds", "0.05",
                                 "--threads", "1", "--json", str(out), "-q"])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert [row["model"] for row in rows] == ["student-tiny", BASELINE]  # the baseline is added
    assert all(KEYS <= set(row) for row in rows) and rows[1]["ratio_to_baseline"] == 1.0
    assert "student-tiny" in r.output


def test_onnxruntime_backend_row():
    rows = bench_speed([arch_entry("student-tiny")], BenchConfig(backend="onnxruntime", **TINY))
    (row,) = rows
    assert row["backend"] == "onnxruntime" and row["fps"] > 0 and row["macs"] > 0
    assert row["ratio_to_baseline"] is None  # no baseline in this run


def test_bench_run_cache_adds_accuracy_to_the_speed_row(tmp_path, synthetic_cache):
    from facepipe.train import TrainConfig, train

    run = tmp_path / "r"
    train(TrainConfig(cache=str(synthetic_cache), out=str(run), arch="student-tiny", epochs=1, loss="ce",
                      val_split="none", threads=1, device="cpu", final_eval=""))
    out = tmp_path / "b.json"
    res = CliRunner().invoke(cli, ["bench", str(run), str(synthetic_cache), "--size", "64", "--seconds", "0.05",
                                   "--threads", "1", "--json", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    mine = [r for r in rows if r["model"].startswith("r ")][0]
    assert 0 <= mine["overall_f1"] <= 1 and 0 < mine["pixel_acc"] <= 1 and mine["coords"] == "original"
    assert any(r["model"] == BASELINE and "overall_f1" not in r for r in rows)
