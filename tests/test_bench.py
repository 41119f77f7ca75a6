"""`bench`: speed rows side by side with the baseline, MACs counted from the real layers."""
import json
import time

import pytest
import torch
from click.testing import CliRunner

from facepipe.analysis.macs import count_macs, count_params
from facepipe.cli import cli
from facepipe.infer.bench import BASELINE, BenchConfig, arch_entry, bench_speed
from facepipe.util.timing import timeit_in_turns

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


def test_onnxruntime_backend_rows_one_fixed_size_graph_per_size():
    # Each size gets its own graph with height and width fixed (export --fixed-size): a graph fixed at the
    # first size would refuse the second.
    rows = bench_speed([arch_entry("student-tiny")], BenchConfig(backend="onnxruntime", **dict(TINY, sizes=(32, 64))))
    assert [r["size"] for r in rows] == [32, 64]
    for row in rows:
        assert row["backend"] == "onnxruntime" and row["fps"] > 0 and row["macs"] > 0
        assert row["ratio_to_baseline"] is None  # no baseline in this run


def test_bench_run_cache_adds_accuracy_to_the_speed_row(tmp_path, synthetic_cache, train_tiny):
    run = train_tiny(tmp_path / "r", arch="student-tiny")
    out = tmp_path / "b.json"
    res = CliRunner().invoke(cli, ["bench", str(run), str(synthetic_cache), "--size", "64", "--seconds", "0.05",
                                   "--threads", "1", "--json", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    mine = [r for r in rows if r["model"].startswith("r ")][0]
    assert 0 <= mine["overall_f1"] <= 1 and 0 < mine["pixel_acc"] <= 1 and mine["coords"] == "original"
    assert any(r["model"] == BASELINE and "overall_f1" not in r for r in rows)


def test_spread_and_unreliability_from_synthetic_timings():
    from facepipe.infer.bench import SPREAD_MAX, WAIT_MAX, repeat_spread, unreliable, warning
    from facepipe.util.timing import cpu_wait_share

    steady = [[0.010] * 10] * 5
    assert repeat_spread(steady) == pytest.approx(0.0)
    # One iteration's hiccup averages out within its slice of ten...
    assert repeat_spread([[0.010] * 10] * 4 + [[0.010] * 9 + [0.030]]) < SPREAD_MAX
    # ...a neighbour taking the cores for the last three slices does not.
    loaded = [[0.010] * 10] * 2 + [[0.040] * 10] * 3
    assert repeat_spread(loaded) == pytest.approx((100 - 25) / 25)
    assert repeat_spread([[0.01]]) == 0.0

    # Kernel counters per thread: (ns on a CPU, ns waiting for one); a thread born mid-window counts from 0.
    before = {"1": (1_000, 0), "2": (1_000, 0)}
    after = {"1": (9_000, 2_000), "2": (9_000, 2_000), "3": (500, 500)}
    assert cpu_wait_share(before, after) == pytest.approx(4_500 / 21_000)
    # Without them: CPU time the process did not get out of threads x wall.
    assert cpu_wait_share(None, None, cpu_s=1.0, wall_s=1.0, threads=2) == pytest.approx(0.5)
    assert cpu_wait_share(None, None, cpu_s=2.1, wall_s=1.0, threads=2) == 0.0

    assert unreliable(0.05, 0.01, 0.3, cores=2) == []
    assert unreliable(0.05, None, None, cores=2) == []  # nothing measured against it
    assert unreliable(0.05, 0.01, 1.9, cores=2) == []  # our own previous run still in the 1-min average
    assert unreliable(SPREAD_MAX + 0.1, 0.01, 0.3, cores=2) == [f"repeat spread {SPREAD_MAX + 0.1:.0%}"]
    assert unreliable(0.05, WAIT_MAX + 0.3, 0.3, cores=2) == ["waited 40% of the time for a CPU"]
    assert unreliable(0.05, 0.01, 3.1, cores=2) == ["load 3.1 on 2 cores"]

    row = dict(model="student", spread=0.05, cpu_wait=0.01, load=0.3, cores=2, unreliable=False)
    assert warning([row, dict(row, model=BASELINE)]) is None
    msg = warning([row, dict(row, model=BASELINE, spread=0.38, cpu_wait=0.41, load=3.1, unreliable=True)])
    assert msg.startswith("figures unreliable: load 0.3 on 2 cores, repeat spread up to 38% (bisenet-r18)")
    assert "41%" in msg and "ratio_to_baseline" in msg and "\n" not in msg


def test_bench_piped_prints_whole_cells_and_json_says_how_far_to_trust_it(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "b.json"
    # As CI runs it: stdout a pipe, no COLUMNS (rich would fall back to 80 and cut cells to "teach…").
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", "facepipe", "bench", "--fps", "--arch", "student-tiny", "--size", "64",
                        "--seconds", "0.05", "--threads", "1", "--json", str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and "..." not in r.stdout
    for word in ("student-tiny", BASELINE, "latency_ms_p50", "ratio_to_baseline", "spread", "cpu_wait"):
        assert word in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) > 80  # printed at its own width, not squeezed
    rows = json.loads(out.read_text())["rows"]
    for row in rows:
        assert KEYS <= set(row) and row["spread"] >= 0 and row["cores"] >= 1
        assert isinstance(row["unreliable"], bool)
        assert row["load"] is None or row["load"] >= 0
        assert row["cpu_wait"] is None or 0 <= row["cpu_wait"] <= 1
    # The warning goes to stderr, on one line, whenever a row is flagged (tiny settings on a shared machine often are).
    assert ("figures unreliable:" in r.stderr) == any(row["unreliable"] for row in rows)


def test_tables_are_never_cut(capsys, monkeypatch):
    from facepipe.util import progress

    cols = ("model", "fps", "macs", "ratio_to_baseline")
    rows = [("a-long-model-name (student)", 3.941, "1548.75M", "2.511")]
    monkeypatch.delenv("COLUMNS", raising=False)
    progress.Reporter(quiet=False).table("piped", rows, cols)  # capsys: not a terminal, like a CI log
    out = capsys.readouterr().out
    assert "…" not in out and "a-long-model-name (student)" in out and "1548.75M" in out
    # A terminal narrower than the table gets one line per row rather than "1548.…".
    monkeypatch.setattr(progress, "_isatty", lambda f: True)
    monkeypatch.setenv("COLUMNS", "40")
    progress.Reporter(quiet=False).table("narrow", rows, cols)
    out = capsys.readouterr().out
    assert "…" not in out and "fps=3.941" in out and "macs=1548.75M" in out and "ratio_to_baseline=2.511" in out


def test_parse_profile_row_adds_up(tmp_path):
    """bench --parse on two copies of a photo with one face: counts, shares of the six steps summing to
    one, and the network's CPU and alone figures beside its time inside parse."""
    from PIL import Image
    from skimage import data

    from facepipe.infer.parse_profile import STEPS, profile_parse

    for k in range(2):
        Image.fromarray(data.astronaut()).save(tmp_path / f"a{k}.png")
    row = profile_parse([tmp_path], workers=1)
    assert (row["photos"], row["faces"], row["unreadable"]) == (2, 2, 0)
    assert set(row["steps"]) == set(STEPS)
    assert abs(sum(v["share"] for v in row["steps"].values()) - 1) < 0.01
    assert row["steps"]["detect+landmarks"]["seconds"] > 0 and row["steps"]["warp back"]["seconds"] > 0
    assert 0 < row["network_cpu_ms_per_face"] and 0 < row["network_ms_per_face_alone_as_in_parse"]


def test_bench_with_no_model_named_times_the_bundled_models():
    # CI's `bench --fps` ratio must be the bundled default's, whatever width it has, not an untrained net's
    from facepipe.infer.bench_report import bench_entries
    from facepipe.infer.model import LoadedModel

    entries = bench_entries()
    assert [e.name for e in entries] == ["default", "accurate", BASELINE]
    assert count_params(entries[0].model) == count_params(LoadedModel.load("default").net)
    assert [e.name for e in bench_entries(archs=("student-tiny",))] == ["student-tiny", BASELINE]


def test_a_two_branch_model_reports_its_colour_branch():
    """params and MACs of the bundled default are its colour network's: the network a colour face runs
    (a constant input would route to the gray branch and count that one's MACs)."""
    from facepipe.infer.bench import run_entry
    from facepipe.models.gray_route import one_branch

    e = run_entry("default")
    (r,) = bench_speed([e], BenchConfig(**TINY))
    color = one_branch(e.model)
    assert r["params"] == count_params(color)
    assert r["macs"] == count_macs(color, torch.zeros(1, e.in_channels, 64, 64))
    assert r["macs"] < count_macs(e.model.gray, torch.zeros(1, e.in_channels, 64, 64))


def test_rows_are_timed_in_turns_so_a_slow_spell_meets_every_row(monkeypatch):
    """A machine that slows down for a while (our VM does, for seconds at a time) must slow every row
    alike: timed one after the other, the spell fell on whichever row's window it met."""
    clock, log, slices = [0.0], [], []

    def machine_factor():  # 3x slower from 0.06 s on, whatever is running then
        return 3.0 if clock[0] > 0.06 else 1.0

    def work(name, cost):
        def fn():
            log.append(name)
            clock[0] += cost * machine_factor()
        return fn

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])  # a simulated clock the work advances
    out = timeit_in_turns([work("a", 0.001), work("b", 0.010)], warmup=1, seconds=0.05, min_iters=5,
                          sync=lambda: None, turns=5, advance=lambda: slices.append(log[-1]))
    (sa, _), (sb, _) = out
    assert len(sa) == len(sb) == 5 and all(len(t) >= 1 for t in sa + sb)
    assert slices == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]  # the order reversed every other round
    # Both rows met the slow spell, so their ratio stays near the true 10x (one after the other, b's
    # whole window fell in it: 30x).
    ratio = (sum(map(sum, sb)) / sum(map(len, sb))) / (sum(map(sum, sa)) / sum(map(len, sa)))
    assert 7 < ratio < 13


def test_a_trained_model_is_also_timed_at_its_own_crop_side(tmp_path):
    """Without --size, `accurate` (384 px crops) gets a row at 384 as parse runs it, with the baseline there
    for its ratio; a named --size times exactly that size."""
    from facepipe.infer.bench import Entry, entry_sizes
    from facepipe.infer.bench_report import bench_table, bench_title

    net = arch_entry("student-tiny")
    trained = [Entry("a", net.model, net.in_channels, side=48), Entry("b", net.model, net.in_channels, side=32),
               arch_entry("student-tiny"), arch_entry(BASELINE)]
    cfg = BenchConfig(**dict(TINY, sizes=(32,), own_sides=True))
    assert [entry_sizes(e, trained, cfg) for e in trained] == [(32, 48), (32,), (32,), (32, 48)]
    assert all(entry_sizes(e, trained, BenchConfig(**dict(TINY, sizes=(32,)))) == (32,) for e in trained)
    rows = bench_speed(trained[:1] + trained[3:], cfg)
    assert [(r["model"], r["size"], r["parse_side"]) for r in rows] == [
        ("a", 32, False), ("a", 48, True), (BASELINE, 32, False), (BASELINE, 48, False)]
    assert rows[1]["ratio_to_baseline"] == pytest.approx(rows[1]["fps"] / rows[3]["fps"])
    cols, table = bench_table(rows)
    assert [t[cols.index("size")] for t in table] == ["32", "48*", "32", "48"]
    assert "size* = the crop side parse cuts" in bench_title(rows)
