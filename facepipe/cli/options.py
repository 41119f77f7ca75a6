"""What the commands share: option types, defaults taken from the stages' configs, shared options.

Defaults are written once, in the stage's config dataclass (or, for a stage without one, its function's
keyword default): `field_option` reads them for --help and click, `config_from` builds the config from
click's kwargs by field name, so a command names only the options it treats specially.

Every number a user types is checked by click: a value out of range then stops the command with click's
one usage line naming the option, before the stage runs: no traceback, and no output folder claimed with
a config that can never finish (a rerun with the corrected value would be refused as "another config").
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from typing import Any, Callable

import click

from facepipe.analysis.receptive_field import dilations_for
from facepipe.learn.augment import recipe_config
from facepipe.util.progress import Reporter

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# Crop and input sides: align refuses anything outside 32..2048 (a face below 32 px has no parts to
# parse); the models take any side, upsampling their logits to it.
SIZE = click.IntRange(32, 2048)
BATCH = click.IntRange(min=1)
EPOCHS = click.IntRange(min=1)
COUNT = click.IntRange(min=1)
# numpy's generators refuse negative seeds; train draws per-epoch seeds as seed * 7919 + epoch < 2**64.
SEED = click.IntRange(0, 2**32 - 1)
THREADS = click.IntRange(min=0)  # 0 = every core this process may use (device.set_threads)
WORKERS = click.IntRange(min=0)  # 0 = all cores for the stage pools; the main process for DataLoaders


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf: nan passes every comparison a range makes."""

    name = "number"  # a word is "not a valid number", not click's "not a valid float range"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv

    def _describe_range(self) -> str:
        if self.min is None and self.max is None:
            return "finite"  # click would print "x<=None"
        return super()._describe_range()


FINITE = FiniteRange()  # any number, e.g. a dlib score threshold (negative finds more faces)
POSITIVE = FiniteRange(min=0, min_open=True)
NON_NEGATIVE = FiniteRange(min=0)
FRACTION = FiniteRange(0, 1)
OPEN_FRACTION = FiniteRange(0, 1, min_open=True, max_open=True)
POSITIVE_FRACTION = FiniteRange(0, 1, min_open=True)
LABEL_ID = click.IntRange(0, 255)  # label maps are uint8
# dlib upsampling doubles the photo side each time: 4 already turns a 1600 px photo into 25600 px; -1 = auto.
UPSAMPLE = click.IntRange(-1, 4)
# dlib's frontal detector scans an 80x80 window: photos shrunk below that cannot hold a face it finds.
DETECT_SIDE = click.IntRange(min=80)


def int_list(item: click.IntRange, example: str, multiple_of: int = 1):
    """Callback for integers given as a comma list ("2,4,8"), or repeated (multiple=True), or both.

    Each integer is checked by `item`, so the message is click's own ("0 is not in the range ...").
    Returns a tuple of ints, or None when the option was not given."""

    def callback(ctx, param, value):
        if value is None:
            return None
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            return ()
        out = []
        for text in texts:
            parts = [v.strip() for v in str(text).split(",")]
            if not any(parts):
                raise click.BadParameter(f"no integers in {text!r}; e.g. {example}", ctx, param)
            for v in parts:
                if not v:
                    continue
                try:
                    n = int(v)
                except ValueError:
                    raise click.BadParameter(f"{v!r} is not an integer; give a comma list such as {example}",
                                             ctx, param) from None
                n = item.convert(n, param, ctx)
                if n % multiple_of:
                    raise click.BadParameter(f"{n} is not a multiple of {multiple_of} (the models downsample by "
                                             f"{multiple_of}); e.g. {example}", ctx, param)
                out.append(n)
        return tuple(out)

    callback.numeric = True  # tests/test_cli_options.py walks options carrying this mark
    return callback


# Dilation rates of a model's context layers: a rate below 1 is no convolution.
dilation_rates = int_list(click.IntRange(min=1), "2,4,8,1")


def rnorm_target(ctx, param, value):
    """--rnorm / --target: `optimum` or a positive r/s, kept as given (receptive_field.dilations_for reads it)."""
    if value is None or value.strip().lower() == "optimum":
        return value
    try:
        x = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a positive number such as 1.2, or `optimum`", ctx, param) from None
    if not x > 0 or x == float("inf"):
        raise click.BadParameter(f"{value}: r/s must be a positive number such as 1.2, or `optimum`", ctx, param)
    return value


rnorm_target.numeric = True


# --- Defaults written once, in the stage's config ------------------------------------------------------------

_NONE = object()  # no default: a required field or parameter


def _defaults(source) -> dict[str, Any]:
    """Name -> default of each field of a config dataclass, or of each parameter of a stage function."""
    if dataclasses.is_dataclass(source):
        out = {}
        for f in dataclasses.fields(source):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = _NONE
        return out
    return {n: _NONE if p.default is p.empty else p.default for n, p in inspect.signature(source).parameters.items()}


def field_default(source, name: str):
    """The default of field (or parameter) `name` of `source`; TypeError when there is none."""
    value = _defaults(source).get(name, _NONE)
    if value is _NONE:
        raise TypeError(f"{getattr(source, '__qualname__', source)} has no default for {name!r}")
    return value


def field_option(source, name: str, *decls: str, render: Callable | None = None, **attrs):
    """click.option(*decls, **attrs) whose default is `source`'s default for `name`, shown in --help.

    source: a stage's config dataclass, or for a stage without one the function whose keyword default
    it is. render: turns that default into what the option takes (a tuple into "1,2,4" for an int_list
    callback). An explicit default= keeps a CLI default that differs from the config's; say why there."""
    value = field_default(source, name)  # checked even when overridden: a renamed field fails at import
    if "default" not in attrs:
        attrs["default"] = render(value) if render else value
    attrs.setdefault("show_default", True)
    return click.option(*decls, **attrs)


def comma(values) -> str:
    """(1, 2, 4) -> "1,2,4": a tuple default as the text an int_list option takes."""
    return ",".join(map(str, values))


def config_kwargs(source, kwargs: dict, **overrides) -> dict:
    """The entries of click's `kwargs` that `source` (config dataclass or stage function) takes, then `overrides`."""
    names = _defaults(source)
    return {**{k: v for k, v in kwargs.items() if k in names}, **overrides}


def config_from(config, kwargs: dict, **overrides):
    """`config` built from click's kwargs by field name; `overrides` for options that are not a field as is."""
    return config(**config_kwargs(config, kwargs, **overrides))


# --- Options and helpers shared by several commands ----------------------------------------------------------

def reporter(quiet: bool) -> Reporter:
    # Under torchrun only rank 0 draws progress and tables.
    return Reporter(quiet=quiet or os.environ.get("RANK", "0") != "0")


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
force_option = click.option("--force", is_flag=True, help="Replace an existing output made with another config.")
shard_option = click.option("--shard", default=None, metavar="I/N",
                            help="Do every Nth photo from the I-th (N machines, one folder); "
                                 "then a run without --shard writes the manifest.")


def workers_option(config):
    """--workers of the stages that run a process pool (`config` holds its default)."""
    return field_option(config, "workers", "--workers", type=WORKERS, show_default="all cores",
                        help="Worker processes.")


def upsample_option(source):
    """--upsample of the stages that detect faces (`source` holds its default: -1, by photo size)."""
    return field_option(source, "upsample", "--upsample", type=UPSAMPLE, show_default="auto",
                        help="dlib detector upsampling (finds smaller faces, slower); -1 picks by photo size "
                             "(hog: 1 under 1200 px; cnn: 1 under 400 px, each step costs the CNN ~4x).")


def max_side_option(source):
    """--max-side of the stages that detect faces."""
    return field_option(source, "max_side", "--max-side", type=DETECT_SIDE,
                        help="Photos are shrunk to this longest side for detection: a face narrower than about "
                             "80 px after the shrink (40 px at --upsample 1) is not found.")


def run_summary(manifest: dict) -> list[tuple]:
    """Summary rows of a train/distill run: counts, final test scores, seconds."""
    rows = list(manifest["counts"].items())
    e = manifest.get("eval")
    if e:
        rows += [(f"test {k} ({e['coords']})", e[k]) for k in ("overall_f1", "pixel_acc", "mean_f1")]
    return rows + [("seconds", manifest["seconds"])]


def rnorm_option(f):
    """--rnorm of train and distill (dilations_for_rnorm turns it into dilation rates)."""
    return click.option("--rnorm", "rnorm_target", default=None, callback=rnorm_target,
                        help="Set the dilations so that r/s is closest to this (a number, or `optimum`: the "
                             "optimum our r_norm sweep measured for this architecture). Not with --dilations.")(f)


def dilations_for_rnorm(arch, size, target, dilations):
    """--rnorm -> dilation rates for `arch` at input `size` (`dilations` when --rnorm is not given)."""
    if target is None:
        return dilations
    if dilations:
        raise click.UsageError("give --dilations or --rnorm, not both.")
    return dilations_for(arch, size, target)[0]


def amp_option(config, help: str = "Mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 "
                                     "(AVX512-BF16/AMX); fp32 elsewhere."):
    """--amp/--no-amp of train and distill (`config` holds its default)."""
    return field_option(config, "amp", "--amp/--no-amp", help=help)


def augment_options(config):
    """--augment and --backgrounds of train and distill (`config` holds their defaults)."""
    backgrounds = field_option(config, "backgrounds", "--backgrounds", type=click.Path(file_okay=False, exists=True),
                               help="A `facepipe backgrounds` folder: the wild recipe pastes faces onto its photos.")
    augment = field_option(config, "augment", "--augment", callback=_recipe, metavar="RECIPE[,FIELD=V...]",
                           help="none, basic (flips, pose jitter, brightness/contrast) or wild (basic with more "
                                "pose and scale, faces on --backgrounds photos, hair recoloured, grayscale, "
                                "hue, shadows, blur, noise, JPEG). Fields of facepipe.learn.augment.AugmentConfig "
                                "can be set after it for ablations: 'wild,paste=0' (no background "
                                "replacement), 'wild,gray=0,hair=0'.")
    return lambda f: augment(backgrounds(f))


def outside_photo_option(config, teacher: bool = False):
    """--outside-photo of train and distill: what the labelled faces' black fill beyond their photos teaches."""
    return field_option(
        config, "outside_photo", "--outside-photo", type=click.Choice(["label", "ignore", "edge"]),
        help="Labelled crop pixels outside the photo a face was cut from (black fill): label (the cache's label "
             "there, background by default" + (", and the teacher's answer" if teacher else "") + "), ignore "
             "(left out of the loss" + ("es" if teacher else "") + "; the augmentation pastes a backdrop there) "
             "or edge (background beyond the photo's background, ignored beyond its hair and skin).")


def init_model(ctx, param, value):
    """--init of train and distill: an empty name would silently mean "from random weights"."""
    if value is not None and not str(value).strip():
        raise click.BadParameter("give a run folder, a checkpoint file or a bundled name (default, fast, accurate).")
    return value


def _recipe(ctx, param, value):
    """The spec checked and without spaces, so that "wild, paste=0" resumes a run made with "wild,paste=0"."""
    try:
        recipe_config(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return "".join(str(value).split())


def build_model_kwargs(dilations, width, extra_json) -> dict:
    """--model-kwargs JSON, with --dilations and --width laid over it."""
    try:
        kw = json.loads(extra_json) if extra_json else {}
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON ({e.msg}); e.g. '{{\"refine\": 8}}'", param_hint="--model-kwargs") from None
    if not isinstance(kw, dict):
        raise click.BadParameter("give a JSON object, e.g. '{\"refine\": 8}'", param_hint="--model-kwargs")
    if dilations:
        kw["dilations"] = list(dilations)
    if width:
        kw["width"] = width
    return kw
