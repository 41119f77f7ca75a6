"""The `facepipe` command line: thin click commands over the stage modules.

Each command (facepipe/cli/<stage>_cmd.py, listed in workflow order in facepipe/cli/commands.py) builds
the stage's config from its options, calls the stage's core function and prints its summary; options,
their defaults and what the commands share are in facepipe/cli/options.py. Errors a user can cause
(FacepipeError) become one line on stderr and exit code 1.
"""
from __future__ import annotations

import difflib
import sys

import click

from facepipe import __version__
from facepipe.cli.commands import MODULES, register_all
from facepipe.cli.options import CONTEXT
from facepipe.util.distributed import cleanup, leave_finished
from facepipe.util.errors import FacepipeError
from facepipe.util.heap import keep_freed_memory
from facepipe.util.interrupt import exit_on_next_sigint


class Group(click.Group):
    def list_commands(self, ctx):
        # Workflow order (facepipe.cli.commands.MODULES), not click's alphabetical, so that `facepipe --help`
        # reads as the pipeline; sorted() is stable, so a module's own commands keep their order.
        def rank(name):
            mod = getattr(self.commands[name].callback, "__module__", "").rpartition(".")[2]
            return MODULES.index(mod) if mod in MODULES else len(MODULES)

        return sorted(self.commands, key=rank)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            if args and "No such command" in str(e):
                close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=1)
                if close:
                    raise click.UsageError(f"No such command {args[0]!r}. Did you mean {close[0]!r}?") from None
            raise


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="facepipe")
def cli():
    """facepipe: face parsing after Wei et al. (TIP 2019), from photos to a real-time parser.

    \b
    Commands, in workflow order (each stage reads the previous stage's folder):
      import           a dataset's release layout -> common layout (images/, labels/, splits)
      paste            an imported set's faces on other backgrounds: a robustness benchmark
      backgrounds      photos without faces, for training faces on real backgrounds
      landmarks        dlib face boxes + 5- and 68-point landmarks
      align            similarity-aligned face crops (+ labels), matrices to warp back
      cache            one HDF5 file with images, labels, landmark heatmaps
      show             contact sheet of a cache: faces, label overlays, heatmaps
      check-landmarks  landmark error against dlib XML ground truth
      train            train a parser (teacher recipe: heatmap channel + contextual loss)
      eval             score a run on a cache split, in the original photos' coordinates
      pseudolabel      a teacher's soft labels on unlabelled faces
      distill          distil a teacher into a real-time student
      bench            FPS, latency, parameters, MACs of models side by side (+ accuracy)
      export           a run or bundled model -> ONNX with metadata, checked against torch
      parse            photos -> label maps, overlays, JSON (bundled model by default)
      rnorm            receptive field r and r/s of a model; `rnorm sweep`: the r/s experiment
      models           registered architectures and the bundled weights (default/fast, accurate)
      demo             the whole chain on embedded data, no download

    \b
    `facepipe COMMAND --help` gives each command's options and examples.
    """


register_all(cli)


def main():
    keep_freed_memory()  # before any tensor: why in util/heap.py
    ok = False
    try:
        _main()
        ok = True
    except SystemExit as e:
        ok = e.code in (0, None)
        raise
    finally:
        if cleanup(sync=ok) and ok:  # left torchrun's process group: a stage had joined one
            leave_finished()  # without the teardown that sometimes aborts a finished rank (why: there)


def _main():
    try:
        cli.main(prog_name="facepipe", standalone_mode=False)
    except FacepipeError as e:
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        exit_on_next_sigint()
        click.echo("aborted; rerun the same command to continue where it stopped.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        exit_on_next_sigint()
        click.echo("interrupted; rerun the same command to continue where it stopped.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except OSError as e:
        # Disk full, permission denied...: the environment, not a bug; atomic writes kept old outputs.
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        text = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
        # HDF5 read failures carry no errno: a damaged chunk in a cache or pseudo-label file.
        hint = "" if e.errno else "; an HDF5 input is corrupt or truncated, remake it with the command that made it"
        click.secho(f"error: {text}{where}{hint}", fg="red", err=True)
        sys.exit(1)
