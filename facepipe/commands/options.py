"""Number types shared by the commands, so that every number a user types is checked by click.

A value out of range then stops the command with click's one usage line naming the option, before the
stage runs: no traceback, and no output folder claimed with a config that can never finish (a rerun
with the corrected value would be refused as "another config").
"""
from __future__ import annotations

import math

import click

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
