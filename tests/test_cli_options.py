"""Every number option of every command, given 0, -1 and a word, through the CLI's own entry point.

The promise (issue 15): a number the command cannot use stops it with one short error line naming the
option, exit code 1 or 2, no traceback, and nothing written: an output folder claimed with a config that
can never finish would make the corrected command be refused. Options are found by walking the
registered commands, so a new number option without a range fails here until it gets one (see
facepipe/cli/options.py) or an entry in ACCEPTS below.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from facepipe.cli import cli, main

REPO = Path(__file__).resolve().parents[1]
VALUES = ("0", "-1", "abc")

# Values a number option legitimately takes among VALUES, with the reason; only the rest are tried.
ACCEPTS = {
    ("align", "--min-face"): ({"0"}, "0 keeps faces of every size"),
    ("align", "--outside-label"): ({"0"}, "0 is the background label"),
    ("align", "--workers"): ({"0"}, "0 = all cores"),
    ("align", "--turn-shift"): ({"0"}, "0 = crops centred on the face, as before the option"),
    ("landmarks", "--workers"): ({"0"}, "0 = all cores"),
    ("import", "--workers"): ({"0"}, "0 = all cores"),
    ("landmarks", "--upsample"): ({"0", "-1"}, "0 = no upsampling, -1 = by photo size"),
    ("landmarks", "--threshold"): ({"0", "-1"}, "dlib's score offset: negative finds more faces"),
    ("parse", "--min-score"): ({"0", "-1"}, "a dlib score: lower finds more faces"),
    ("parse", "--confirm-below"): ({"0", "-1"}, "a dlib score: at or under --min-score, nothing is confirmed"),
    ("parse", "--upsample"): ({"0", "-1"}, "0 = no upsampling, -1 = by photo size"),
    ("parse", "--workers"): ({"0"}, "0 = all cores"),
    ("bench", "--workers"): ({"0"}, "0 = all cores (parse workers of --parse)"),
    ("demo", "--min-score"): ({"0", "-1"}, "a dlib score: lower finds more faces"),
    ("paste", "--seed"): ({"0"}, "any seed >= 0"),
    ("backgrounds", "--procedural"): ({"0"}, "0 = photos only, no drawings"),
    ("paste", "--workers"): ({"0"}, "0 = all cores"),
    ("paste", "--margin"): ({"0"}, "0 = no margin: the photo's own size"),
    ("paste", "--defocus"): ({"0"}, "0 = no blur: the background as sharp as its photo"),
    ("import", "--max-bad"): ({"0"}, "0 = fail on the first unreadable image"),
    ("cache", "--compression"): ({"0"}, "gzip level 0 = stored"),
    ("train", "--loss-weight"): ({"0"}, "0 = no center/sc term"),
    ("train", "--loss-warmup"): ({"0"}, "the term applies from the first step"),
    ("train", "--seed"): ({"0"}, "any seed >= 0"),
    ("train", "--threads"): ({"0"}, "0 = all cores"),
    ("train", "--workers"): ({"0"}, "0 = load in the training process"),
    ("distill", "--alpha"): ({"0"}, "0 = no KD terms"),
    ("distill", "--confidence"): ({"0"}, "0 = keep every teacher pixel"),
    ("distill", "--seed"): ({"0"}, "any seed >= 0"),
    ("distill", "--threads"): ({"0"}, "0 = all cores"),
    ("pseudolabel", "--threads"): ({"0"}, "0 = all cores"),
    ("bench", "--threads"): ({"0"}, "0 = all cores"),
    ("rnorm sweep", "--seed"): ({"0"}, "any seed >= 0"),
    ("rnorm sweep", "--threads"): ({"0"}, "0 = all cores"),
    ("show", "--seed"): ({"0"}, "any seed >= 0"),
}

# Options that take numbers as text (comma lists, I/N, `optimum` or a number): walked whatever their type,
# so one that loses its check is still tried.
NUMBER_TEXT = {("bench", "--size"), ("bench", "--batch"), ("train", "--dilations"), ("train", "--rnorm"),
               ("distill", "--dilations"), ("distill", "--rnorm"), ("rnorm", "--dilations"), ("rnorm", "--target"),
               ("rnorm sweep", "--sizes"), ("rnorm sweep", "--dilations"), ("align", "--shard"),
               ("landmarks", "--shard")}


def _args(cmd: str, w: Path) -> list[str]:
    """Arguments that let `cmd` parse, naming inputs that do not exist, so that a number wrongly let
    through fails fast (a FacepipeError that does not name the option) instead of running a stage."""
    nope = str(w / "nope")
    (w / "lm").mkdir()
    (w / "gt.xml").write_text("<dataset><images></images></dataset>")
    (w / "blocker").write_text("")  # demo's OUT below a file: a demo let through cannot start drawing faces
    return {
        "models": ["--no-rf", "--json", str(w / "out.json")],
        "import": ["folder", nope, str(w / "out")],
        "paste": [nope, nope, str(w / "out")],
        "landmarks": [nope, str(w / "out")],
        "align": [nope, str(w / "out")],
        "cache": [nope, str(w / "out.h5")],
        "show": [nope + ".h5", "--out", str(w / "out.png")],
        "check-landmarks": [str(w / "lm"), str(w / "gt.xml"), "--json", str(w / "out.json")],
        "train": [nope + ".h5", "--out", str(w / "out")],
        "eval": [nope, nope + ".h5"],
        "pseudolabel": ["--teacher", nope, nope + ".h5", str(w / "out.h5")],
        "distill": ["--teacher", nope, "--out", str(w / "out")],
        "bench": ["--model", nope, "--json", str(w / "out.json")],
        "export": [nope, "--onnx", str(w / "out.onnx")],
        "parse": [nope + ".jpg", "--model", nope, "--out", str(w / "out")],
        "rnorm": ["--arch", "nope"],
        "rnorm sweep": [nope + ".h5", "--out", str(w / "out")],
        "demo": [str(w / "blocker" / "demo")],
    }.get(cmd, [])


def _commands(group: click.Group, prefix: str = ""):
    for name, cmd in sorted(group.commands.items()):
        path = f"{prefix} {name}".strip()
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path)


def _takes_numbers(path: str, p: click.Parameter) -> bool:
    if not isinstance(p, click.Option) or p.is_flag:
        return False
    return (isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))
            or getattr(p.callback, "numeric", False) or (path, p.opts[0]) in NUMBER_TEXT)


def _cases():
    for path, cmd in _commands(cli):
        for p in cmd.params:
            if _takes_numbers(path, p):
                ok = ACCEPTS.get((path, p.opts[0]), (set(), ""))[0]
                # nan passes every comparison a range makes, so float options are also given nan.
                floats = ("nan",) if isinstance(p.type, click.types.FloatParamType) else ()
                for v in VALUES + floats:
                    if v not in ok:
                        yield pytest.param(path, p.opts[0], v, id=f"{path.replace(' ', '-')}{p.opts[0]}={v}")


CASES = list(_cases())


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(argv, monkeypatch, capsys) -> tuple[int, str]:
    """`facepipe ARGV` in this process through facepipe.cli.main, the console script's own function."""
    monkeypatch.setattr(sys, "argv", ["facepipe", *argv])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    # Anything else (a traceback for the user) propagates and fails the test by itself.
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_walk_finds_the_options_it_must():
    found = {(c.values[0], c.values[1]) for c in CASES}
    assert NUMBER_TEXT - found == set(), "a NUMBER_TEXT option is gone: update the list"
    present = {(path, p.opts[0]) for path, cmd in _commands(cli) for p in cmd.params if isinstance(p, click.Option)}
    assert set(ACCEPTS) - present == set(), "an ACCEPTS entry names an option that no longer exists"
    assert len(found) >= 60


@pytest.mark.parametrize("cmd,opt,value", CASES)
def test_bad_number_is_one_line_naming_the_option_and_writes_nothing(cmd, opt, value, tmp_path, monkeypatch,
                                                                     capsys):
    w = tmp_path / "w"
    w.mkdir()
    args = _args(cmd, w)
    monkeypatch.chdir(w)  # relative default outputs (runs/...) would land in w and be seen
    before = _tree(w)
    # The option before the arguments: click checks parameters in command-line order, so a missing
    # input cannot answer first.
    code, out = _run([*cmd.split(), opt, value, *args], monkeypatch, capsys)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    assert code in (1, 2), f"exit {code}: {out}"
    assert "Traceback" not in out
    assert len(errors) == 1 and opt in errors[0] and len(errors[0]) <= 200, out
    # click's usage lines (a long one wraps, indented) may precede it; nothing else: no table, no progress.
    assert all(ln.startswith(("Usage:", "Try ", "Error:", "error:", " ")) for ln in lines), out
    assert _tree(w) == before, f"{cmd} {opt} {value} wrote {sorted(_tree(w) - before)}"


@pytest.mark.parametrize("argv", [["bench", "--fps", "--size", "abc"],
                                  ["train", "nope.h5", "--out", "run", "--batch-size", "0"]])
def test_through_the_installed_entry_point(argv, tmp_path):
    """Two of the cases through `python -m facepipe`, as a user runs them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "facepipe", *argv], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"Error: Invalid value for '{argv[-2]}'"), r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["eval", "runs/nope", "c.h5"], ["distill", "--teacher", "runs/nope"],
                                  ["pseudolabel", "--teacher", "runs/nope", "c.h5"], ["bench", "--model", "runs/nope"]])
def test_a_run_that_does_not_exist_is_named_so(argv, tmp_path, monkeypatch, capsys):
    """Not "no checkpoint in runs/nope", which reads as a run still to be trained (issue 15, 11a)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    code, out = _run(argv, monkeypatch, capsys)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert out.startswith("error: runs/nope does not exist; give a run folder"), out
    assert list(tmp_path.rglob("*")) == [tmp_path / "runs"]
    (tmp_path / "runs" / "empty").mkdir()  # an existing folder without checkpoints keeps its own advice
    code, out = _run([a.replace("nope", "empty") for a in argv], monkeypatch, capsys)
    assert code == 1 and out.startswith("error: no checkpoint in runs/empty; train one with"), out


# --- Issue 14: defaults written once, in the stage configs; commands thin ----------------------------------------

def _stage_configs():
    from facepipe.analysis.rnorm_sweep import SweepConfig
    from facepipe.data.align import AlignConfig
    from facepipe.data.backgrounds import BackgroundsConfig
    from facepipe.data.cache import CacheConfig
    from facepipe.data.importers.common import ImportConfig
    from facepipe.data.landmarks import LandmarksConfig
    from facepipe.data.paste import PasteConfig
    from facepipe.demo import DemoConfig
    from facepipe.infer.bench import BenchConfig
    from facepipe.infer.eval_report import EvalConfig
    from facepipe.learn.distill import DistillConfig
    from facepipe.learn.pseudolabel import PseudoConfig
    from facepipe.learn.train import TrainConfig

    return {"import": ImportConfig, "paste": PasteConfig, "backgrounds": BackgroundsConfig,
            "landmarks": LandmarksConfig, "align": AlignConfig, "cache": CacheConfig, "train": TrainConfig,
            "eval": EvalConfig, "pseudolabel": PseudoConfig, "distill": DistillConfig, "bench": BenchConfig,
            "rnorm sweep": SweepConfig, "demo": DemoConfig}


# Options named like a config field whose value the command turns into the field's (the default differs).
CONVERTED = {("train", "model_kwargs"): "JSON text -> dict", ("distill", "model_kwargs"): "JSON text -> dict",
             ("bench", "sizes"): "none given: the config's", ("bench", "batches"): "none given: the config's",
             ("backgrounds", "exclude"): "repeatable, no default: none given is (), the config's",
             ("rnorm sweep", "epochs"): "none given: 0, --budget decides (0 itself is refused)"}


def test_option_defaults_are_the_stage_configs():
    """Every option named like a field of its stage's config defaults to that field's default."""
    import dataclasses

    from facepipe.cli.options import comma, field_default

    checked = 0
    for path, cmd in _commands(cli):
        config = _stage_configs().get(path)
        if config is None:
            continue
        fields = {f.name for f in dataclasses.fields(config)}
        for p in cmd.params:
            if p.name not in fields or (path, p.name) in CONVERTED:
                continue
            try:
                want = field_default(config, p.name)
            except TypeError:  # a required field: an argument or a required option
                continue
            got = p.get_default(click.Context(cmd))  # click >= 8.3 keeps a flag's unset default as a sentinel
            assert got == want or (isinstance(want, tuple) and got == comma(want)), (path, p.name, got, want)
            checked += 1
    assert checked >= 70


def test_config_from_takes_the_fields_in_kwargs_and_the_overrides():
    from facepipe.cli.options import config_from, config_kwargs, field_default, field_option
    from facepipe.learn.train import TrainConfig

    cfg = config_from(TrainConfig, {"cache": "c.h5", "out": "r", "epochs": 3, "quiet": True, "no_augment": True},
                      augment="none")
    assert (cfg.cache, cfg.out, cfg.epochs, cfg.augment) == ("c.h5", "r", 3, "none")
    assert cfg.lr == field_default(TrainConfig, "lr")

    def stage(a, b=2, *, c=3):
        return a, b, c

    assert stage(**config_kwargs(stage, {"a": 1, "c": 5, "d": 9})) == (1, 2, 5)
    with pytest.raises(TypeError):
        field_option(TrainConfig, "no_such_field", "--x")
    with pytest.raises(TypeError):
        field_default(TrainConfig, "cache")  # required: no default


def test_command_modules_import_at_the_top_and_not_the_group():
    """No command imports facepipe.cli (the group) back, and none imports inside a function unless the
    line says why (an optional heavy package)."""
    import ast

    for f in sorted((REPO / "facepipe" / "cli").glob("*.py")):
        lines = f.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and f.name not in ("__init__.py", "commands.py"):
                assert node.module != "facepipe.cli", f"{f.name}:{node.lineno} imports the group"
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        assert "#" in lines[inner.lineno - 1], f"{f.name}:{inner.lineno} imports in {node.name}()"


# Options that are not a field of their stage's config, each handled by its command by hand. config_from
# drops what is not a field, so an option renamed on one side only would silently fall back to the
# config's default: a new entry here is a decision, not a formality.
NOT_FIELDS = {
    "align": {"quiet"}, "backgrounds": {"quiet"}, "import": {"quiet"}, "landmarks": {"quiet"},
    "rnorm sweep": {"quiet"}, "cache": {"no_photo_labels", "quiet"}, "paste": {"dataset", "quiet"},
    "demo": {"epochs", "no_bench", "no_export", "quiet"}, "eval": {"json_path", "quiet", "sheet"},
    "pseudolabel": {"quiet", "sheet"}, "train": {"dilations", "no_augment", "quiet", "rnorm_target", "width"},
    "distill": {"dilations", "no_kd_labeled", "quiet", "rnorm_target"},
    "bench": {"archs", "cache", "fps", "json_path", "models", "no_baseline", "no_fold_bn", "parse_photos", "quiet",
              "run", "split", "workers"},
}


def test_every_option_is_a_config_field_or_handled_by_its_command():
    import dataclasses

    seen = {}
    for path, cmd in _commands(cli):
        config = _stage_configs().get(path)
        if config is not None:
            fields = {f.name for f in dataclasses.fields(config)}
            seen[path] = {p.name for p in cmd.params if p.name not in fields}
    assert seen == NOT_FIELDS
