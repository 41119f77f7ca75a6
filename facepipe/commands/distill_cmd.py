import click

from facepipe.cli import CONTEXT, force_option, quiet_option, reporter, run_summary
from facepipe.commands.options import (BATCH, EPOCHS, FRACTION, NON_NEGATIVE, POSITIVE, SEED, THREADS,
                                       dilation_rates)
from facepipe.commands.train_cmd import amp_option, augment_options, build_model_kwargs, dilations_for_rnorm, rnorm_option


@click.command("distill", context_settings=CONTEXT)
@click.option("--teacher", required=True, help="Teacher run folder.")
@click.option("--labeled", default=None, help="Labelled cache (default: the teacher's training cache).")
@click.option("--unlabeled", default=None,
              help="Pseudo-labels from `facepipe pseudolabel` (default: TEACHER/pseudo/unlabeled.h5; 'none' to skip).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run folder (default: runs/<teacher>-student).")
@click.option("--arch", default="student", show_default=True)
@click.option("--dilations", callback=dilation_rates, default=None, help="e.g. 2,4,8")
@rnorm_option
@click.option("--model-kwargs", default=None, help="Extra model kwargs as JSON.")
@click.option("--temperature", type=POSITIVE, default=1.0, show_default=True)
@click.option("--alpha", type=NON_NEGATIVE, default=1.0, show_default=True, help="Weight of the KD terms.")
@click.option("--confidence", type=FRACTION, default=0.0, show_default=True,
              help="Leave out pixels where the teacher's max probability is below this.")
@click.option("--no-kd-labeled", is_flag=True, help="KD on unlabelled faces only.")
@click.option("--epochs", type=EPOCHS, default=60, show_default=True)
@click.option("--batch-size", type=BATCH, default=8, show_default=True)
@click.option("--unlabeled-batch", type=BATCH, default=8, show_default=True)
@click.option("--lr", type=POSITIVE, default=4e-3, show_default=True)
@augment_options
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=THREADS, default=0, show_default="all cores")
@amp_option
@force_option
@quiet_option
def distill_cmd(teacher, labeled, unlabeled, out, arch, dilations, rnorm_target, model_kwargs, temperature, alpha, confidence,
                no_kd_labeled, epochs, batch_size, unlabeled_batch, lr, augment, backgrounds, seed, device, threads, amp, force, quiet):
    """Distil a teacher into a real-time student with labelled and pseudo-labelled faces.

    \b
    Loss: CE to ground truth + alpha * T^2 * KL(teacher || student) on labelled and unlabelled faces,
    low-confidence teacher pixels left out. Same run layout and resume as `train`.

    \b
    Examples:
      facepipe distill --teacher runs/t1 --backgrounds data/backgrounds
      facepipe distill --teacher runs/t1 --unlabeled none --out runs/s-labelled-only
      facepipe distill --teacher runs/t1 --temperature 2 --confidence 0.6 --out runs/s-t2
      facepipe distill --teacher runs/t1 --rnorm optimum --out runs/s-opt
    """
    from pathlib import Path

    from facepipe.distill import DistillConfig, distill

    out = out or str(Path("runs") / f"{Path(teacher).name}-student")
    if rnorm_target is not None:  # the student sees the teacher's input size
        from facepipe.checkpoint import load_checkpoint, run_checkpoint

        size = int(load_checkpoint(run_checkpoint(teacher))["size"])
        dilations = dilations_for_rnorm(arch, size, rnorm_target, dilations)
    cfg = DistillConfig(teacher=teacher, out=out, labeled=labeled, unlabeled=unlabeled, arch=arch,
                        model_kwargs=build_model_kwargs(dilations, None, model_kwargs), temperature=temperature,
                        alpha=alpha, confidence=confidence, kd_labeled=not no_kd_labeled, epochs=epochs,
                        batch_size=batch_size, unlabeled_batch=unlabeled_batch, lr=lr, augment=augment,
                        backgrounds=backgrounds, seed=seed, device=device,
                        threads=threads, amp=amp, force=force)
    rep = reporter(quiet)
    m = distill(cfg, rep)
    rep.table(f"distill {arch} -> {out}", run_summary(m), ("", "value"))


COMMANDS = [distill_cmd]
