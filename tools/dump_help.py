"""Write `--help` of every facepipe command and subcommand to DIR/<name>.txt, and the option table
(name, default, type) of each to DIR/options.json, for comparing the command line across a change.

    python tools/dump_help.py DIR
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from facepipe.cli import cli


def walk(group: click.Group, prefix: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, prefix + (name,))


def main(out: str) -> None:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    runner, table = CliRunner(), {}
    (d / "facepipe.txt").write_text(runner.invoke(cli, ["--help"]).output)
    for path, cmd in walk(cli):
        (d / ("-".join(path) + ".txt")).write_text(runner.invoke(cli, [*path, "--help"]).output)
        table[" ".join(path)] = [
            {"name": p.name, "opts": sorted(p.opts), "default": repr(p.default), "type": re.sub(r" at 0x[0-9a-f]+", "", repr(p.type)),
             "multiple": p.multiple, "required": p.required}
            for p in cmd.params]
    (d / "options.json").write_text(json.dumps(table, indent=1, sort_keys=True))
    print(f"{len(table)} commands -> {d}")


if __name__ == "__main__":
    main(sys.argv[1])
