"""The `facepipe` command line: thin click commands over the stage modules.

Each command parses options into a stage config, calls the stage's core function and prints its
summary. Errors a user can cause (FacepipeError) become one line on stderr and exit code 1.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from facepipe import __version__
from facepipe.errors import FacepipeError
from facepipe.interrupt import exit_on_next_sigint
from facepipe.progress import Reporter

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Group(click.Group):
    def list_commands(self, ctx):
        # Workflow order (facepipe.commands.MODULES), not click's alphabetical, so that `facepipe --help`
        # reads as the pipeline; sorted() is stable, so a module's own commands keep their order.
        from facepipe.commands import MODULES

        def rank(name):
            mod = getattr(self.commands[name].callback, "__module__", "").rpartition(".")[2]
            return MODULES.index(mod) if mod in MODULES else len(MODULES)

        return sorted(self.commands, key=rank)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            import difflib

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


def reporter(quiet: bool) -> Reporter:
    import os

    # Under torchrun only rank 0 draws progress and tables.
    return Reporter(quiet=quiet or os.environ.get("RANK", "0") != "0")


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
force_option = click.option("--force", is_flag=True, help="Replace an existing output made with another config.")
workers_option = click.option("--workers", type=click.IntRange(min=0), default=0, show_default="all cores",
                              help="Worker processes.")
shard_option = click.option("--shard", default=None, metavar="I/N",
                            help="Do every Nth photo from the I-th (N machines, one folder); "
                                 "then a run without --shard writes the manifest.")


def run_summary(manifest: dict) -> list[tuple]:
    """Summary rows of a train/distill run: counts, final test scores, seconds."""
    rows = list(manifest["counts"].items())
    e = manifest.get("eval")
    if e:
        rows += [(f"test {k} ({e['coords']})", e[k]) for k in ("overall_f1", "pixel_acc", "mean_f1")]
    return rows + [("seconds", manifest["seconds"])]


def main():
    ok = False
    try:
        _main()
        ok = True
    except SystemExit as e:
        ok = e.code in (0, None)
        raise
    finally:
        d = sys.modules.get("facepipe.distributed")  # loaded only by stages that ran under torchrun
        if d is not None:
            d.cleanup(sync=ok)


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


# Commands live in facepipe/commands/*.py so this file stays short; importing registers them.
from facepipe.commands import register_all  # noqa: E402

register_all(cli)
