"""Help meta-tests: every command is listed, in workflow order, in `facepipe --help` and named in the
README; every command's and subcommand's --help works; help points at nothing a clone lacks."""
import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from facepipe.cli import cli
from facepipe.cli.commands import MODULES

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ["import", "paste", "backgrounds", "landmarks", "align", "cache", "show", "check-landmarks", "train", "eval", "pseudolabel",
            "distill", "bench", "export", "parse", "rnorm", "models", "demo"]


def _walk(group: click.Group, path=()):
    """(command path, command) for every command and subcommand under `group`."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield path + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, path + (name,))


def test_commands_are_listed_in_workflow_order():
    assert cli.list_commands(click.Context(cli)) == WORKFLOW
    assert len(MODULES) == len(WORKFLOW)  # one module per command: a new module needs a place in WORKFLOW
    out = CliRunner().invoke(cli, ["--help"]).output
    section = out[out.index("\nCommands:"):]
    listed = re.findall(r"^  (\S+)\s", section, re.M)
    assert listed == WORKFLOW, "click's Commands: section is not in workflow order"


def test_top_level_docstring_lists_every_command_in_order():
    doc = cli.help
    pos = []
    for name in cli.commands:
        m = re.search(rf"^\s+{re.escape(name)}\s", doc, re.M)
        assert m, f"`facepipe --help`'s own list misses {name}"
        pos.append((m.start(), name))
    assert [n for _, n in sorted(pos)] == WORKFLOW


def test_readme_names_every_command():
    readme = (ROOT / "README.md").read_text()
    for name in cli.commands:
        assert re.search(rf"facepipe {re.escape(name)}(?![\w-])", readme), f"README never shows `facepipe {name}`"
    for path, _ in _walk(cli):
        if len(path) > 1:
            assert "facepipe " + " ".join(path) in readme, f"README never shows `facepipe {' '.join(path)}`"


def test_every_command_and_subcommand_help_exits_0():
    r = CliRunner()
    paths = [p for p, _ in _walk(cli)]
    assert ("rnorm", "sweep") in paths
    for path in [()] + paths:
        res = r.invoke(cli, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert res.output.startswith("Usage: "), path


def test_every_command_and_subcommand_help_shows_itself_in_examples():
    """The convention: an `Example:` or `Examples ...:` paragraph of indented lines, among them the command
    itself (`facepipe rnorm sweep ...` for the subcommand)."""
    r = CliRunner()
    for path, _ in _walk(cli):
        name = "facepipe " + " ".join(path)
        text = r.invoke(cli, [*path, "--help"]).output
        m = re.search(r"^  Examples?\b[^\n]*:\n((?:    .*\n)+)", text, re.M)
        assert m, f"`{name} --help` has no Examples section"
        assert re.search(rf"{re.escape(name)}(?![\w-])", m.group(1)), f"`{name} --help`'s examples never show {name}"


def test_help_points_at_nothing_a_clone_lacks():
    r = CliRunner()
    for path in [()] + [p for p, _ in _walk(cli)]:
        text = r.invoke(cli, [*path, "--help"]).output
        assert "../shared" not in text, f"`facepipe {' '.join(path)} --help` uses a ../shared path"
        for doc in re.findall(r"\bdocs/[\w./-]+\.md", text):
            assert (ROOT / doc).exists(), f"`facepipe {' '.join(path)} --help` points at {doc}, not in the repo"


def test_train_arch_help_points_at_an_existing_command():
    text = CliRunner().invoke(cli, ["train", "--help"]).output
    for name in re.findall(r"`facepipe ([\w-]+)`", text):
        assert name in cli.commands


def test_models_lists_architectures_and_bundled_weights():
    from facepipe.models import list_models

    res = CliRunner().invoke(cli, ["models", "--no-rf", "--json", "-"])
    assert res.exit_code == 0, res.output
    listing = json.loads(res.output)
    archs = {a["arch"]: a for a in listing["architectures"]}
    assert sorted(archs) == list_models()
    assert all(a["params"] > 0 and a["macs"] > 0 for a in archs.values())
    # MACs at 256x256 as bench counts them: the teacher costs ~40x the student.
    assert archs["teacher"]["macs"] > 10 * archs["student"]["macs"]
    b, acc = listing["bundled"]
    assert b["names"] == ["default", "fast"] and b["arch"] == "student" and b["size"] == 256
    assert b["classes"][0] == "background" and "FASSEG" in b["trained_on"] and len(b["sha256"]) == 64
    # The teacher ships as `accurate`, with its own card (fp16 storage: half the bytes of fp32 weights).
    assert acc["names"] == ["accurate"] and acc["arch"] == "teacher" and "FASSEG" in acc["trained_on"]
    assert acc["bytes"] < acc["params"] * 4 * 0.6
    # Both cards' accuracy bullets reach the listing (a bullet whose first line has no colon did not).
    assert "%" in b.get("accuracy", "") and "%" in acc.get("accuracy", "")


@pytest.mark.slow
def test_models_table_with_receptive_field(tmp_path):
    res = CliRunner().invoke(cli, ["models", "--json", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    assert "teacher-small" in res.output and "bundled weights: default = fast" in res.output
    listing = json.loads((tmp_path / "m.json").read_text())
    archs = {a["arch"]: a for a in listing["architectures"]}
    assert archs["teacher"]["r"] > 0 and archs["student"]["r_norm"] > 0
    assert archs["bisenet-r18"]["r"] is None and "rnorm" in archs["bisenet-r18"]["rf_note"]
