"""The pipeline graph cannot go stale: each stage in dvc.yaml declares exactly the repo code its module imports.

The import closure of a stage is every module of this repo that its `cmd` module imports, transitively, including
imports inside functions (they run when the function does). A stage's code deps (`stages/`, `difflab/` paths in
`deps`) are derived from that closure: a package directory when the stage imports every module in it, else the
module files it imports. The failure names the stage and the lines to change. The library is layered like the
pipeline (LAYERS): a package imports only from lower layers and itself, so a stage depends on a few packages.
The params half of the promise (declared params == params read) is checked end to end in test_pipeline.py.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from conftest import user_env

from difflab.core import families
from difflab.part_a import views
from difflab.pipeline import params
from difflab.sampling import samplers

pytestmark = pytest.mark.unit

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
    """The file of a `python -m stages.<name> ...` command."""
    words = stage["cmd"].split()
    assert words[:2] == ["python", "-m"] and words[2].startswith("stages."), \
        f"cmd {stage['cmd']!r} is not `python -m stages.<name> [args]`"
    return root.joinpath(*words[2].split(".")).with_suffix(".py")


def code_deps(stage: dict, root: Path = REPO) -> list[str]:
    """The deps that are this repo's Python code: files or directories under difflab/ or stages/."""
    return [d for d in stage.get("deps", []) if d.split("/")[0] in CODE_ROOTS and "${" not in d
            and (d.endswith(".py") or (root / d).is_dir())]


def package_dirs(root: Path = REPO) -> list[Path]:
    """Every package directory of the library (difflab itself and its subpackages), outermost first."""
    return sorted((p.parent for p in (root / "difflab").rglob("__init__.py")), key=lambda d: len(d.parts))


def minimal_deps(closure: set[Path], root: Path = REPO) -> list[str]:
    """The closure as dvc.yaml deps: a package directory when every module under it is imported, else its files."""
    deps, covered = [], set()
    for package in package_dirs(root):
        modules = set(package.rglob("*.py"))
        if modules <= closure and not modules <= covered:
            deps.append(str(package.relative_to(root)))
            covered |= modules
    deps += [str(p.relative_to(root)) for p in closure - covered]
    return sorted(deps)


def dependency_problems(root: Path = REPO) -> list[str]:
    """One line per missing or extra code dep, naming the stage and the dvc.yaml line to add or remove."""
    problems = []
    for name, stage in stage_definitions(root).items():
        wanted = minimal_deps(import_closure(script_of(stage, root), root), root)
        declared = code_deps(stage, root)
        problems += [f"{name}: imports {d} but does not declare it; add `- {d}` to its deps"
                     for d in wanted if d not in declared]
        problems += [f"{name}: declares {d} but does not import all of it; remove `- {d}` from its deps"
                     + (" and declare the modules it imports" if (root / d).is_dir() else "")
                     for d in declared if d not in wanted]
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
    dvc = {"stages": {"s": {"cmd": "python -m stages.s", "deps": [
        "stages/s.py", "difflab/__init__.py", "difflab/used.py", "difflab/unused.py"]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc))
    problems = dependency_problems(tmp_path)
    assert problems == ["s: imports difflab/lazy.py but does not declare it; add `- difflab/lazy.py` to its deps",
                        "s: declares difflab/unused.py but does not import all of it; "
                        "remove `- difflab/unused.py` from its deps"]


def test_stage_scripts_are_all_in_the_pipeline():
    """A stage script nobody runs is dead code; a stage whose script is missing cannot run."""
    scripts = {script_of(s) for s in stage_definitions().values()}
    assert scripts == set((REPO / "stages").glob("*.py"))


@pytest.mark.parametrize("names, implemented", [
    (params.VIEW_NAMES, lambda: set(views.VIEWS)),
    (params.DDPM_SAMPLERS + params.FLOW_SAMPLERS, lambda: set(samplers.DDPM_SAMPLERS + samplers.FLOW_SAMPLERS)),
    (params.FAMILIES, lambda: set(families.FAMILIES)),
])
def test_params_choices_are_exactly_what_the_code_implements(names, implemented):
    """params.py lists the names without importing the implementations (so validating loads no model code);
    this keeps the two lists equal."""
    assert set(names) == implemented()


def test_the_check_names_a_package_when_all_of_it_is_imported(tmp_path):
    """A package the stage imports in full is one directory dep; partly imported, it is its module files."""
    for pkg in ("difflab", "difflab/whole", "difflab/part"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "stages").mkdir()
    (tmp_path / "difflab" / "whole" / "a.py").write_text("from difflab.whole import b  # noqa\n")
    (tmp_path / "difflab" / "whole" / "b.py").write_text("")
    (tmp_path / "difflab" / "part" / "used.py").write_text("")
    (tmp_path / "difflab" / "part" / "other.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text("from difflab.whole import a\nfrom difflab.part import used\n")
    closure = import_closure(tmp_path / "stages" / "s.py", tmp_path)
    assert minimal_deps(closure, tmp_path) == ["difflab/__init__.py", "difflab/part/__init__.py",
                                               "difflab/part/used.py", "difflab/whole", "stages/s.py"]


# The library's packages from the bottom up: a package imports only from lower layers and from itself, so "nothing
# reaches up" and each stage's deps are a few whole packages.
LAYERS = (("pipeline",), ("data", "figures"), ("core",), ("sampling", "training", "evaluation", "backbones"),
          ("part_b", "part_a"), ("report",))


def layer_problems(root: Path = REPO) -> list[str]:
    """One line per import that reaches up (or sideways) between library packages, or from a stage to a stage."""
    level = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
    problems = []
    for path in sorted((root / "difflab").rglob("*.py")) + sorted((root / "stages").glob("*.py")):
        rel = path.relative_to(root)
        own = rel.parts[1] if rel.parts[0] == "difflab" and len(rel.parts) > 2 else None
        for name in sorted(imported_modules(path, root)):
            parts = name.split(".")
            if parts[0] == "stages":
                problems.append(f"{rel} imports {name}: stages import only from the library")
            if parts[0] != "difflab" or len(parts) < 2 or parts[1] not in level or module_file(name, root) is None:
                continue
            if rel.parts[0] == "difflab" and own is None:
                problems.append(f"{rel} imports {name}: the top-level package imports nothing")
            elif own is not None and parts[1] != own and level[parts[1]] >= level.get(own, -1):
                problems.append(f"{rel} (layer {level.get(own)}) imports {name} (layer {level[parts[1]]})")
    return problems


def test_no_package_reaches_up_and_stages_import_only_the_library():
    packages = {d.name for d in (REPO / "difflab").iterdir() if (d / "__init__.py").is_file()}
    assert packages == {pkg for layer in LAYERS for pkg in layer}, "every package needs a place in LAYERS"
    problems = layer_problems()
    assert not problems, "imports that break the layering:\n" + "\n".join(problems)


def test_a_stage_module_runs_the_library_beside_it_not_the_installed_one(tmp_path):
    """`python -m stages.<name>` from a repo root imports that root's difflab even though .venv holds an editable
    install of another checkout, so scratch copies (the e2e tests, `make smoke`, DVC experiments in temp dirs) run
    their own code."""
    import subprocess
    import sys

    (tmp_path / "difflab").mkdir()
    (tmp_path / "difflab" / "__init__.py").write_text("")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "probe.py").write_text("import difflab\nprint(difflab.__file__)\n")
    out = subprocess.run([sys.executable, "-m", "stages.probe"], cwd=tmp_path, capture_output=True, text=True,
                         env=user_env(), check=True).stdout.strip()
    assert Path(out) == tmp_path / "difflab" / "__init__.py"
    (tmp_path / "elsewhere").mkdir()
    installed = subprocess.run([sys.executable, "-c", "import difflab; print(difflab.__file__)"], env=user_env(),
                               cwd=tmp_path / "elsewhere", capture_output=True, text=True)
    assert installed.returncode == 0, "difflab should import from anywhere (the editable install in .venv)"
    assert Path(installed.stdout.strip()) == REPO / "difflab" / "__init__.py"
