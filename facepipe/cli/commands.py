"""Click commands, one module per stage, in workflow order; each is a thin shell over the stage's core function."""
from facepipe.cli import (
    align_cmd,
    backgrounds_cmd,
    bench_cmd,
    cache_cmd,
    check_cmd,
    demo_cmd,
    distill_cmd,
    eval_cmd,
    export_cmd,
    import_cmd,
    landmarks_cmd,
    models_cmd,
    parse_cmd,
    paste_cmd,
    pseudolabel_cmd,
    rnorm_cmd,
    show_cmd,
    train_cmd,
)

# Workflow order: `facepipe --help` lists the commands so (facepipe.cli.Group.list_commands).
STAGES = (import_cmd, paste_cmd, backgrounds_cmd, landmarks_cmd, align_cmd, cache_cmd, show_cmd, check_cmd,
          train_cmd, eval_cmd, pseudolabel_cmd, distill_cmd, bench_cmd, export_cmd, parse_cmd, rnorm_cmd,
          models_cmd, demo_cmd)
MODULES = [m.__name__.rpartition(".")[2] for m in STAGES]


def register_all(group) -> None:
    for mod in STAGES:
        for cmd in mod.COMMANDS:
            group.add_command(cmd)
