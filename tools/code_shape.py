"""Shape of the facepipe package: lines, long functions, imports inside functions, and its floors.

    python tools/code_shape.py [PACKAGE_DIR] [--json OUT]

Floors, top to bottom (docs/architecture.md): 1 the CLI and the demo, 2 the stages, 3 the contracts the
stages share, 4 the models, 5 utilities. An import may go down or stay on its floor, except that no stage
imports another stage. Every import counts, inside functions too.
An import inside a function is for an optional heavy module, with a comment on its line or the
line above saying why. The longest chain of module-level
imports is reported as well (modules, not floors).
"""
from __future__ import annotations

import ast
import json
import sys
from functools import lru_cache
from pathlib import Path

# Stage groups: the modules that make up one stage. Modules of two groups must not import each other.
STAGES = {
    "import": ("facepipe.data.importers",), "landmarks": ("facepipe.data.landmarks",),
    "align": ("facepipe.data.align",), "cache": ("facepipe.data.cache",), "paste": ("facepipe.data.paste",),
    "backgrounds": ("facepipe.data.backgrounds",), "check-landmarks": ("facepipe.data.landmark_eval",),
    "train": ("facepipe.learn.train",), "distill": ("facepipe.learn.distill",),
    "pseudolabel": ("facepipe.learn.pseudolabel",),
    "parse": ("facepipe.infer.parse", "facepipe.infer.parse_work", "facepipe.infer.label_warp",
              "facepipe.infer.parse_profile"),
    "export": ("facepipe.infer.export",), "bench": ("facepipe.infer.bench", "facepipe.infer.bench_report"), "models": ("facepipe.infer.catalog",),
    "pack": ("facepipe.infer.pack",),
}
# Orchestrators run other stages: the CLI, the demo and the r/s sweep (each cell is a whole train run).
TOP = ("facepipe.cli", "facepipe.__main__", "facepipe.demo", "facepipe.analysis.rnorm_sweep")
LONG = 60  # lines; the networks in facepipe.models are exempt


def under(mod: str, prefixes) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def stage_of(mod: str) -> str | None:
    return next((s for s, mods in STAGES.items() if under(mod, mods)), None)


def floor(mod: str) -> int:
    if under(mod, TOP):
        return 1
    if stage_of(mod):
        return 2
    if under(mod, ("facepipe.models",)):
        return 4
    if under(mod, ("facepipe.util",)) or mod == "facepipe":
        return 5
    return 3


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def targets(node, modules) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("facepipe"):
        return [t for a in node.names if (t := resolve(f"{node.module}.{a.name}", modules))]
    if isinstance(node, ast.Import):
        return [t for a in node.names if a.name.startswith("facepipe") and (t := resolve(a.name, modules))]
    return []


def scan(root: Path) -> dict:
    files = {module_name(root, f): f for f in sorted(root.rglob("*.py"))}
    top_graph, edges, long_funcs, inner, lines = {}, [], [], [], 0
    for mod, f in files.items():
        src = f.read_text()
        lines += len(src.splitlines())
        tree = ast.parse(src)
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_func = {id(s) for fn in funcs for s in ast.walk(fn) if isinstance(s, (ast.Import, ast.ImportFrom))}
        deps = set()
        for node in ast.walk(tree):
            for t in targets(node, files):
                if t != mod and not mod.startswith(t + "."):  # a package's own __init__ is not an edge
                    edges.append((mod, t, node.lineno))
                    if id(node) not in in_func:
                        deps.add(t)
            if id(node) in in_func:
                src_lines = src.splitlines()
                said = "#" in src_lines[node.lineno - 1] or "#" in src_lines[node.lineno - 2]
                inner.append((f"{mod}:{node.lineno}", said))
        top_graph[mod] = deps
        for fn in funcs:
            n = fn.end_lineno - fn.lineno + 1
            if n > LONG and not under(mod, ("facepipe.models",)):
                long_funcs.append(f"{mod}.{fn.name} ({n} lines)")
    bad = [f"{a}:{ln} (floor {floor(a)}) -> {b} (floor {floor(b)})" for a, b, ln in edges
           if floor(b) < floor(a) or (floor(a) == floor(b) == 2 and stage_of(a) != stage_of(b))]

    @lru_cache(None)
    def chain(m: str, seen: frozenset = frozenset()) -> tuple[str, ...]:
        return max([(m,) + chain(d, seen | {m}) for d in top_graph.get(m, ()) if d not in seen] or [(m,)], key=len)

    deepest = max((chain(m) for m in top_graph), key=len)
    floors_used = max(len({floor(m) for m in chain(m)}) for m in top_graph)
    return {"modules": len(files), "top_level_modules": sum(1 for _ in root.glob("*.py")), "lines": lines,
            "functions_over_60_lines": long_funcs, "imports_inside_functions": [m for m, _ in inner],
            "imports_inside_functions_without_a_why": [m for m, said in inner if not said],
            "layering_violations": sorted(set(bad)), "floors": floors_used,
            "longest_import_chain": len(deepest), "deepest_chain": list(deepest)}


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv and not argv[0].startswith("--") else Path(__file__).parents[1] / "facepipe")
    r = scan(root.resolve())
    if "--json" in argv:
        Path(argv[argv.index("--json") + 1]).write_text(json.dumps(r, indent=1))
    for k, v in r.items():
        if isinstance(v, list) and k != "deepest_chain":
            print(f"{k}: {len(v)}" + "".join(f"\n  {x}" for x in v))
        else:
            print(f"{k}: {' -> '.join(v) if k == 'deepest_chain' else v}")


if __name__ == "__main__":
    main(sys.argv[1:])
