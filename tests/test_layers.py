"""The package keeps its shape (docs/architecture.md): imports go down the floors, no stage imports
another, functions stay short, and imports inside functions are the explained exceptions."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shape():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "tools" / "code_shape.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.scan(ROOT / "facepipe")


def test_imports_go_down_and_no_stage_imports_another(shape):
    assert shape[1]["layering_violations"] == []


def test_at_most_five_floors(shape):
    assert shape[1]["floors"] <= 5


def test_no_function_over_60_lines_outside_the_models(shape):
    assert shape[1]["functions_over_60_lines"] == []


def test_imports_inside_functions_say_why(shape):
    assert shape[1]["imports_inside_functions_without_a_why"] == []


def test_the_checker_sees_a_violation(shape, tmp_path):
    # The rules above must be able to fail: a stage importing another stage inside a function is caught.
    mod, _ = shape
    pkg = tmp_path / "facepipe"
    for sub in ("learn", "infer"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "infer" / "parse.py").write_text("def f():\n    return 1\n")
    (pkg / "learn" / "train.py").write_text("def g():\n    from facepipe.infer.parse import f\n    return f()\n")
    r = mod.scan(pkg)
    assert len(r["layering_violations"]) == 1 and "facepipe.learn.train:2" in r["layering_violations"][0]
    assert r["imports_inside_functions_without_a_why"] == ["facepipe.learn.train:2"]
