"""Click commands, one module per stage; each is a thin shell over the stage's core function."""
import importlib

MODULES = ["import_cmd", "paste_cmd", "backgrounds_cmd", "landmarks_cmd", "align_cmd", "cache_cmd", "show_cmd", "check_cmd", "train_cmd", "eval_cmd", "pseudolabel_cmd", "distill_cmd", "bench_cmd", "export_cmd", "parse_cmd", "rnorm_cmd", "models_cmd", "demo_cmd"]


def register_all(group):
    for name in MODULES:
        try:
            mod = importlib.import_module(f"facepipe.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"facepipe.commands.{name}":
                continue  # stage not written yet
            raise
        for cmd in mod.COMMANDS:
            group.add_command(cmd)
