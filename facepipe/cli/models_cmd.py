import json
import textwrap

import click

from facepipe.cli.options import CONTEXT, SIZE, field_option
from facepipe.infer.catalog import architectures, bundled
from facepipe.util.atomic import write_json
from facepipe.util.progress import Reporter


@click.command("models", context_settings=CONTEXT)
@field_option(architectures, "size", "--size", type=SIZE, help="Input side for MACs and r/s.")
@field_option(architectures, "rf", "--rf/--no-rf",
              help="Measure the exact receptive field (a few seconds per model on a CPU; --no-rf skips it).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the listing as JSON here (`-`: standard output, no tables).")
def models_cmd(size, rf, json_path):
    """Registered architectures (for --arch) and the bundled weights (for --model NAME).

    \b
    Parameters and MACs (multiply-accumulates of one forward pass, batch 1) are counted from the real
    layers, with the input `bench` gives each model (RGB + landmark heatmap; RGB for bisenet-r18) and
    6 classes (FASSEG); r is the exact receptive field, as `facepipe rnorm` measures it. Bundled weights
    are used by name: `facepipe parse photo.jpg --model fast`, `facepipe export fast --onnx f.onnx`.

    \b
    Examples:
      facepipe models
      facepipe models --size 512 --no-rf
      facepipe models --json - | python -m json.tool
    """
    listing = {"size": size, "architectures": architectures(size, rf=rf), "bundled": bundled(rf=rf)}
    if json_path == "-":
        click.echo(json.dumps(listing, indent=2))
        return
    if json_path:
        write_json(json_path, listing)
    rep = Reporter(quiet=False)
    cols = ("arch", "input", "params", "MACs", "r", "r/s", "defaults")
    rows = [(a["arch"], a["input"], _num(a["params"]), _num(a["macs"]), _opt(a.get("r"), rf),
             _opt(a.get("r_norm"), rf), a["defaults"]) for a in listing["architectures"]]
    rep.table(f"facepipe models: registered architectures (--arch), {size}x{size}, batch 1", rows, cols)
    for b in listing["bundled"]:
        title = f"bundled weights: {' = '.join(b['names'])} (the name goes where a run or checkpoint does)"
        if not b["installed"]:
            rep.table(title, [("file", f"{b['file']} (not installed with this package)")], ("", ""))
            continue
        al = b["alignment"]
        rows = [("file", f"{b['file']} ({b['bytes'] / 1e3:.0f} kB, sha256 {b['sha256'][:12]})"),
                ("arch", f"{b['arch']} ({b['defaults']})"),
                ("params / MACs", f"{_num(b['params'])} / {_num(b['macs'])} at {b['size']}x{b['size']}"),
                ("input", f"{b['input']}, {b['size']}x{b['size']} aligned face (iod {al['iod']}"
                          f"{', letterboxed' if al['letterbox'] else ''}, box width {al['box_width']}"
                          f"{', turn shift ' + str(al['turn_shift']) if al.get('turn_shift') else ''})"),
                ("beyond the photo", _FILL_WORDS[b.get("beyond_photo_fill", "black")]),
                ("classes", f"{b['schema']}: {', '.join(b['classes'])}")]
        if b.get("gray_branch"):
            g = b["gray_branch"]
            rows += _wrapped("gray branch", f"{g['arch']} ({g['defaults']}), {_num(g['params'])} params / "
                                            f"{_num(g['macs'])} MACs, for faces of mean saturation below {g['threshold']}"
                                            f"{_toned(g)} "
                                            f"(trained --augment {g['augment']}); one branch runs per face")
        if b.get("r") is not None:
            rows.append(("receptive field", f"r {b['r']}, r/s {b['r_norm']}"))
        rows += _wrapped("trained on", b.get("trained_on", "-")) + _wrapped("accuracy", b.get("accuracy", "-"))
        rows.append(("made by", f"facepipe {b['facepipe_version']}, epoch {b['epoch']}; {b['card']}"))
        rep.table(title, rows, ("", ""))  # no header: left-aligned text
    for a in listing["architectures"]:
        if a.get("rf_note"):
            click.echo(f"{a['arch']}: r not shown: {a['rf_note']}")


# What the network sees where a crop reaches past its photo (infer.photo_fill)
_FILL_WORDS = {"edge": "the photo's colour along its edge, for colour faces (--fill-beyond-photo)",
               "black": "black, as cut"}


def _toned(g: dict) -> str:
    """The toned-photo half of the gray branch's rule (models.gray_route), when the file has one."""
    return "" if g.get("toned") is None else f" or toned (chroma residual below {g['toned']})"


def _wrapped(key: str, text: str, width: int = 88) -> list[tuple[str, str]]:
    """One row per line of a long text: the table stays readable in a log, where it is not folded."""
    lines = textwrap.wrap(text, width, break_on_hyphens=False) or ["-"]
    return [(key if i == 0 else "", line) for i, line in enumerate(lines)]


def _num(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def _opt(v, measured: bool) -> str:
    return str(v) if v is not None else ("-" if measured else "(--rf)")


COMMANDS = [models_cmd]
