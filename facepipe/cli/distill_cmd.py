from pathlib import Path

import click

from facepipe.cli.options import (
    BATCH,
    CONTEXT,
    EPOCHS,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    THREADS,
    amp_option,
    augment_options,
    build_model_kwargs,
    config_from,
    dilation_rates,
    dilations_for_rnorm,
    field_option,
    init_model,
    force_option,
    outside_photo_option,
    quiet_option,
    reporter,
    rnorm_option,
    run_summary,
)
from facepipe.data.face_cache import CacheFile
from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint
from facepipe.learn.distill import DistillConfig, distill


@click.command("distill", context_settings=CONTEXT)
@click.option("--teacher", required=True,
              help="Teacher: a run folder, a checkpoint file or a bundled name (accurate); the last two "
                   "need --labeled and --unlabeled.")
@field_option(DistillConfig, "labeled", "--labeled", help="Labelled cache (default: the teacher's training cache).")
@field_option(DistillConfig, "unlabeled", "--unlabeled",
              help="Pseudo-labels from `facepipe pseudolabel` (default: TEACHER/pseudo/unlabeled.h5; 'none' to skip).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run folder (default: runs/<teacher>-student).")
@field_option(DistillConfig, "arch", "--arch")
@click.option("--dilations", callback=dilation_rates, default=None, help="e.g. 2,4,8")
@rnorm_option
@click.option("--model-kwargs", default=None, help="Extra model kwargs as JSON.")
@field_option(DistillConfig, "temperature", "--temperature", type=POSITIVE)
@field_option(DistillConfig, "alpha", "--alpha", type=NON_NEGATIVE, help="Weight of the KD terms.")
@field_option(DistillConfig, "confidence", "--confidence", type=FRACTION,
              help="Leave out pixels where the teacher's max probability is below this.")
@click.option("--no-kd-labeled", is_flag=True, help="KD on unlabelled faces only.")
@outside_photo_option(DistillConfig, teacher=True)
@field_option(DistillConfig, "epochs", "--epochs", type=EPOCHS)
@field_option(DistillConfig, "batch_size", "--batch-size", type=BATCH)
@field_option(DistillConfig, "unlabeled_batch", "--unlabeled-batch", type=BATCH)
@field_option(DistillConfig, "lr", "--lr", type=POSITIVE)
@augment_options(DistillConfig)
@field_option(DistillConfig, "init", "--init", metavar="MODEL", callback=init_model,
              help="Start the student from these weights (a run, checkpoint file or bundled name such as "
                   "fast) instead of random ones; same --arch. A narrower network is widened so that it starts "
                   "computing the same function; a wider one gives its leading channels, and training takes it "
                   "from there. The schedule starts afresh.")
@field_option(DistillConfig, "seed", "--seed", type=SEED)
@field_option(DistillConfig, "device", "--device")
@field_option(DistillConfig, "threads", "--threads", type=THREADS, show_default="all cores")
@amp_option(DistillConfig, help="Mixed precision on CUDA (fp16). On CPUs the student always trains in fp32: "
                                   "bf16 is no faster for it and gave non-finite losses at random.")
@force_option
@quiet_option
def distill_cmd(out, dilations, rnorm_target, model_kwargs, no_kd_labeled, quiet, **kw):
    """Distil a teacher into a real-time student with labelled and pseudo-labelled faces.

    \b
    Loss: CE to ground truth + alpha * T^2 * KL(teacher || student) on labelled and unlabelled faces,
    low-confidence teacher pixels left out. Same run layout and resume as `train`. The student learns at
    the labelled crops' side; a teacher trained at another (the bundled accurate: 384 px) labels them
    resampled to its own. Pseudo-labels must be of crops of the labelled crops' side.

    \b
    Examples:
      facepipe distill --teacher runs/t1 --backgrounds data/backgrounds
      facepipe distill --teacher runs/t1 --unlabeled none --out runs/s-labelled-only
      facepipe distill --teacher runs/t1 --temperature 2 --confidence 0.6 --out runs/s-t2
      facepipe distill --teacher runs/t1 --rnorm optimum --out runs/s-opt
      facepipe pseudolabel --teacher accurate data/utk.h5 data/utk-pseudo-acc.h5
      facepipe distill --teacher accurate --labeled data/fasseg.h5 --unlabeled data/utk-pseudo-acc.h5 \\
          --init fast --model-kwargs '{"widths": [32, 64, 96], "stem_width": 16, "relu_after_add": true}' \\
          --out runs/fast-more                                     # fast's own settings (facepipe models)
      facepipe distill --teacher runs/t1 --init fast \\
          --model-kwargs '{"widths": [48, 96, 192], "stem_width": 16, "relu_after_add": true}' \\
          --out runs/wider-from-fast                               # grown wider, same function at the start
    """
    teacher = kw["teacher"]
    if rnorm_target is not None:  # the student sees the labelled crops' side (the teacher's own by default)
        size = _student_side(kw.get("labeled"), teacher)
        dilations = dilations_for_rnorm(kw["arch"], size, rnorm_target, dilations)
    cfg = config_from(DistillConfig, kw, out=out or str(Path("runs") / f"{Path(teacher).name}-student"),
                      model_kwargs=build_model_kwargs(dilations, None, model_kwargs), kd_labeled=not no_kd_labeled)
    rep = reporter(quiet)
    m = distill(cfg, rep)
    rep.table(f"distill {cfg.arch} -> {cfg.out}", run_summary(m), ("", "value"))


def _student_side(labeled: str | None, teacher: str) -> int:
    if labeled:
        with CacheFile(labeled) as f:
            return f.size
    return int(load_checkpoint(run_checkpoint(teacher))["size"])


COMMANDS = [distill_cmd]
