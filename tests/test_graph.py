"""The pipeline graph cannot go stale: each stage in dvc.yaml declares exactly the repo code its script imports.

The import closure of a stage is every module of this repo that its `cmd` script imports, transitively, including
imports inside functions (they run when the function does). A stage's code deps (`stages/`, `difflab/` paths in
`deps`) must cover that closure and cover nothing outside it; the failure names the stage and the lines to change.
The params half of the promise (declared params == params read) is checked end to end in test_pipeline.py.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from difflab import objectives, params, samplers, views

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("difflab", "stages")


def module_file(module: str, root: Path = REPO) -> Path | None:
    """The repo file of a dotted module name (package __init__ or module), or None for third-party modules."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Dotted names a file imports anywhere in it (`from a import b` also yields a.b, which may be a module)."""
    package = path.relative_to(root).parent.parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the file's package
                anchor = package[:len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_closure(script: Path, root: Path = REPO) -> set[Path]:
    """The script and every repo file it imports, transitively (parent packages' __init__ included)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path, root):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]), root)
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def stage_definitions(root: Path = REPO) -> dict[str, dict]:
    """Stage name -> its definition (the `do` body for foreach stages)."""
    raw = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in raw.items()}


def script_of(stage: dict, root: Path = REPO) -> Path:
    scripts = [word for word in stage["cmd"].split() if word.endswith(".py")]
    assert len(scripts) == 1, f"cannot tell the script of cmd {stage['cmd']!r}"
    return root / scripts[0]


def code_deps(stage: dict, root: Path = REPO) -> list[str]:
    """The deps that are this repo's Python code: files or directories under difflab/ or stages/."""
    return [d for d in stage.get("deps", []) if d.split("/")[0] in CODE_ROOTS and "${" not in d
            and (d.endswith(".py") or (root / d).is_dir())]


def covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def dependency_problems(root: Path = REPO) -> list[str]:
    """One line per missing or extra code dep, naming the stage and the dvc.yaml line to add or remove."""
    problems = []
    for name, stage in stage_definitions(root).items():
        closure = sorted(str(p.relative_to(root)) for p in import_closure(script_of(stage, root), root))
        declared = code_deps(stage, root)
        for path in closure:
            if not any(covers(dep, path) for dep in declared):
                problems.append(f"{name}: imports {path} but does not declare it; add `- {path}` to its deps")
        for dep in declared:
            if not any(covers(dep, path) for path in closure):
                problems.append(f"{name}: declares {dep} but never imports it; remove `- {dep}` from its deps")
    return problems


def test_every_stage_declares_exactly_the_code_it_imports():
    problems = dependency_problems()
    assert not problems, "dvc.yaml code deps are out of date:\n" + "\n".join(problems)


def test_the_check_catches_a_missing_and_an_extra_dep(tmp_path):
    """The checker itself: a stage whose script imports one module and declares another is reported both ways."""
    (tmp_path / "difflab").mkdir()
    (tmp_path / "stages").mkdir()
    (tmp_path / "difflab" / "__init__.py").write_text("")
    (tmp_path / "difflab" / "used.py").write_text("def f():\n    from difflab import lazy  # noqa\n")
    (tmp_path / "difflab" / "lazy.py").write_text("")
    (tmp_path / "difflab" / "unused.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text("from difflab.used import f\n")
    dvc = {"stages": {"s": {"cmd": "python stages/s.py", "deps": [
        "stages/s.py", "difflab/__init__.py", "difflab/used.py", "difflab/unused.py"]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc))
    problems = dependency_problems(tmp_path)
    assert problems == ["s: imports difflab/lazy.py but does not declare it; add `- difflab/lazy.py` to its deps",
                        "s: declares difflab/unused.py but never imports it; remove `- difflab/unused.py` from its deps"]


def test_stage_scripts_are_all_in_the_pipeline():
    """A stage script nobody runs is dead code; a stage whose script is missing cannot run."""
    scripts = {script_of(s) for s in stage_definitions().values()}
    assert scripts == set((REPO / "stages").glob("*.py"))


@pytest.mark.parametrize("names, implemented", [
    (params.VIEW_NAMES, lambda: set(views.VIEWS)),
    (params.DDPM_SAMPLERS + params.FLOW_SAMPLERS, lambda: set(samplers.DDPM_SAMPLERS + samplers.FLOW_SAMPLERS)),
    (params.KINDS, lambda: set(objectives.KINDS)),
])
def test_params_choices_are_exactly_what_the_code_implements(names, implemented):
    """params.py lists the names without importing the implementations (so validating loads no model code);
    this keeps the two lists equal."""
    assert set(names) == implemented()
