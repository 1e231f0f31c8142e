"""Every test file names its tier, so `make check` stays fast and `make test` stays the whole suite.

`unit` (the file's `pytestmark`): in-process tests on tiny inputs, run by `make check` (`pytest -m "not e2e"`).
`e2e`: tests that run DVC, the stages or a browser as subprocesses, run only by `make test`; a unit file marks such
a test `@pytest.mark.e2e` on the function. Running DVC is found in the source: a call to `scratch_repo` or a command
list starting with "dvc", made by the test itself, by a function it calls or by a fixture it takes.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "e2e")


def marks(node: ast.expr) -> set[str]:
    """Marker names in a `pytestmark` value or a decorator: pytest.mark.X, pytest.mark.X(...), or a list of them."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return set().union(*(marks(n) for n in node.elts))
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
        return {node.attr}
    return set()


def file_tiers(tree: ast.Module) -> set[str]:
    return {tier for node in tree.body if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            for tier in marks(node.value) & set(TIERS)}


def runs_dvc(tree: ast.Module) -> set[str]:
    """Names of the module's functions (tests, fixtures, helpers) that run DVC, directly or through another."""
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    uses, found = {}, set()
    for name, f in functions.items():
        calls = [n for n in ast.walk(f) if isinstance(n, ast.Call)]
        uses[name] = {c.func.id for c in calls if isinstance(c.func, ast.Name)} | {a.arg for a in f.args.args}
        if any(isinstance(c.func, ast.Name) and c.func.id == "scratch_repo" for c in calls) or any(
                c.args and isinstance(c.args[0], ast.List) and c.args[0].elts
                and isinstance(c.args[0].elts[0], ast.Constant) and c.args[0].elts[0].value == "dvc" for c in calls):
            found.add(name)
    while grown := {name for name, used in uses.items() if name not in found and used & found}:
        found |= grown
    return found


def parsed_test_files() -> dict[str, ast.Module]:
    return {f.name: ast.parse(f.read_text(), str(f)) for f in sorted(TESTS.glob("test_*.py"))}


def test_every_test_file_names_one_tier(pytestconfig):
    assert set(TIERS) <= {line.split(":")[0] for line in pytestconfig.getini("markers")}
    wrong = [name for name, tree in parsed_test_files().items() if len(file_tiers(tree)) != 1]
    assert not wrong, (f"{', '.join(wrong)}: name one tier after the imports, `pytestmark = pytest.mark.unit` "
                       "(in-process, fast) or `pytestmark = pytest.mark.e2e` (runs DVC, stages or a browser)")


def test_tests_that_run_dvc_are_e2e():
    unmarked = []
    for name, tree in parsed_test_files().items():
        dvc = runs_dvc(tree)
        for f in tree.body:
            if isinstance(f, ast.FunctionDef) and f.name.startswith("test_") and f.name in dvc:
                if "e2e" not in file_tiers(tree) | set().union(*(marks(d) for d in f.decorator_list)):
                    unmarked.append(f"{name}::{f.name}")
    assert not unmarked, f"these run DVC: mark them @pytest.mark.e2e (or their file e2e): {', '.join(unmarked)}"


def test_the_dvc_finder_finds_the_known_dvc_tests():
    trees = parsed_test_files()
    assert {"test_bad_input", "test_debug_env_shows_the_traceback"} <= runs_dvc(trees["test_bad_inputs.py"])
    assert "test_run_stage_one_line_for_project_errors_traceback_for_bugs" not in runs_dvc(trees["test_bad_inputs.py"])
    for name in ("test_pipeline.py", "test_compare.py", "test_scaling_out.py", "test_reliability.py"):
        tests = {f.name for f in trees[name].body if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")}
        assert tests and tests <= runs_dvc(trees[name]), name
