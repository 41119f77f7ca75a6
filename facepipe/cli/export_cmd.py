import click

from facepipe.cli.options import CONTEXT, field_option, quiet_option, reporter
from facepipe.infer.export import export_run


@click.command("export", context_settings=CONTEXT)
@click.argument("run")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False),
              help="ONNX file to write (its name ends in .onnx).")
@field_option(export_run, "cache", "--cache",
              help="Faces to check the export on (default: the run's cache, else scikit-image's astronaut photo).")
@field_option(export_run, "fixed_size", "--fixed-size/--any-size",
              help="Fix height and width at the model's size (the batch stays free): onnxruntime then runs the "
                   "resizes in its blocked layout, faster on a CPU; other sizes are refused.")
@field_option(export_run, "int8", "--int8/--float",
              help="Quantize to int8 (weights per channel, activations per tensor) for onnxruntime on a CPU: "
                   "calibrated on real faces (--calibrate), checked by the pixels whose class agrees with torch.")
@field_option(export_run, "calibrate", "--calibrate", type=click.Path(),
              help="With --int8: the faces that set the int8 ranges: a folder of photos like the ones you will parse "
                   "(their faces cut as parse cuts them, up to 100) or a cache (its training faces). Default: the "
                   "run's own cache; a bundled model needs one.")
@quiet_option
def export_cmd(run, onnx_path, cache, fixed_size, int8, calibrate, quiet):
    """Export a run, checkpoint or bundled model (default, fast, accurate) to ONNX and check it against torch.

    \b
    Input `image` is (batch, channels, height, width) float32: RGB normalised as in training, plus the
    landmark heatmap channel if the model takes one; output `logits` is (batch, classes, height, width).
    Height and width are free, or the model's size with --fixed-size.
    The file's metadata_props describe classes and colours, normalisation, the heatmap, the alignment
    template, the architecture and the source checkpoint's sha256 (README: "Running the ONNX file").
    OUT must end in .onnx. A model with a grayscale branch (the bundled default) writes a second file
    beside OUT.onnx, OUT-gray.onnx, for faces with next to no colour; both files' gray_branch metadata
    states the rule that picks one.
    The check compares onnxruntime with torch on real faces: the cache's, or without one the astronaut
    photo that ships with scikit-image, detected and aligned as `parse` does (random input only if no
    face is found, and the table says so).
    --int8 writes int8 graphs for onnxruntime (input and output stay float32), about 1.5x faster on a
    CPU with VNNI; the default loses 0.06-0.83 points of pixel accuracy that way on FASSEG's benchmark
    variants (docs/results.md, "onnxruntime in int8"); `facepipe eval RUN CACHE --int8` scores them. The
    weights use 7 bits, so that CPUs without VNNI (AVX2 only) do not overflow onnxruntime's 16-bit sums:
    there int8 is no faster than float, and files exported with 8-bit weights lost 2 points of F1.

    \b
    Examples:
      facepipe export fast --onnx facepipe-fast.onnx -q             # -q: no progress, no table
      facepipe export runs/s1 --onnx s1.onnx
      facepipe export fast --onnx fast-256.onnx --fixed-size   # aligned crops only: faster in onnxruntime
      facepipe export default --onnx int8.onnx --fixed-size --int8 --calibrate ~/photos/
    """
    rep = reporter(quiet)
    r = export_run(run, onnx_path, cache, fixed_size=fixed_size, int8=int8, calibrate=calibrate, reporter=rep)
    rep.table(f"export -> {onnx_path}", list(r.items()), ("", "value"))


COMMANDS = [export_cmd]
