"""The same graph on any machine: nothing outside a stage's declared inputs moves `dvc status` or `git status`.

The tiny pipeline runs in a user's environment (tests/conftest.py `user_env`: no PYTHONDONTWRITEBYTECODE, so Python
writes __pycache__/ inside the package directories the stages depend on), then:
(a) importing every difflab module and every bench/ script, building the package's egg-info and dropping editor and
    notebook files leaves `dvc status` and `git status --porcelain` empty;
(b) a stranger's clone (a path with a space, another user, their own HOME, LANG=C) reproduces the same bytes, and
    writes outside the repo only what the README lists;
(c) a one-line edit of any sampler, CFG, reverse-process step, inference fold or metric function invalidates exactly
    the stages whose import closure holds it: never a `train@`, never `classifier`.
"""
from __future__ import annotations

import ast
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run, scratch_repo, user_env
from test_graph import import_closure, script_of, stage_definitions

# What Python, pip, pytest, notebooks, editors and the OS write inside a tree; .gitignore and .dvcignore list each.
pytestmark = pytest.mark.unit

GENERATED = ("__pycache__/", "*.py[cod]", "*.egg-info/", ".pytest_cache/", ".hypothesis/", ".ipynb_checkpoints/",
             "*.swp", "*.swo", "*~", ".DS_Store")
STRANGER = "difflab-stranger"


def test_the_ignore_files_list_what_tools_write():
    for name in (".gitignore", ".dvcignore"):
        lines = {line.strip() for line in (REPO / name).read_text().splitlines()}
        missing = [p for p in GENERATED if p not in lines]
        assert not missing, f"{name} does not ignore {missing}"
    tracked = run(["git", "ls-files"], REPO).stdout.split()
    assert not [f for f in tracked if ".egg-info/" in f or "__pycache__" in f], "generated files are in git"


def test_every_subprocess_in_the_tests_gets_a_users_environment():
    """Each subprocess call in tests/ passes env= (conftest's `run` passes user_env()), so no test inherits this
    machine's PYTHONDONTWRITEBYTECODE and passes where a user's run would break."""
    calls = ("run", "Popen", "call", "check_call", "check_output")
    problems = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in calls
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"
                    and not any(k.arg == "env" for k in node.keywords)):
                problems.append(f"{path.name}:{node.lineno}")
    assert not problems, f"subprocess calls without env=user_env(): {problems}"


def test_user_env_drops_what_changes_what_python_writes():
    env = user_env(base={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/x", "PYTHONHASHSEED": "0",
                         "HOME": "/home/u", "PATH": "/usr/bin"})
    assert not [k for k in env if k.startswith("PYTHON")]
    assert env["HOME"] == "/home/u" and env["PATH"].endswith("/usr/bin")


# ---------------------------------------------------------------- the tiny pipeline, run as a user would

@pytest.fixture(scope="module")
def pipeline():
    """The tiny pipeline run and committed in a user's environment, in a directory other users can read (the
    stranger's clone reads its MNIST source from it)."""
    base = Path(tempfile.mkdtemp(prefix="difflab-user-env-"))
    base.chmod(0o755)
    try:
        root = scratch_repo(base / "repo")
        run(["dvc", "repro"], root)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "outputs"], root)
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


def dvc_status(root: Path, env: dict | None = None) -> dict:
    return json.loads(run(["dvc", "status", "--json"], root, env=env).stdout or "{}")


@pytest.mark.e2e
def test_importing_everything_in_a_users_environment_leaves_the_graph_and_git_clean(pipeline):
    root = pipeline
    modules = sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                     for p in (root / "difflab").rglob("*.py"))
    benches = sorted(str(p) for p in (root / "bench").glob("*.py"))
    script = ("import importlib, importlib.util, sys\n"
              f"for m in {modules!r}: importlib.import_module(m)\n"
              f"for i, f in enumerate({benches!r}):\n"
              "    spec = importlib.util.spec_from_file_location(f'bench_{i}', f)\n"
              "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n")
    run([sys.executable, "-c", script], root)
    # a bench script imported as a module writes no bytecode of its own; import one through the path to see it
    run([sys.executable, "-c", "import sys; sys.path.insert(0, 'bench'); import sampling"], root)
    assert list((root / "difflab" / "core" / "__pycache__").glob("*.pyc")), "no bytecode written: not a user's env"
    assert list((root / "bench" / "__pycache__").glob("*.pyc"))
    run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info"], root)  # what pip writes
    assert (root / "difflab.egg-info").is_dir()
    for litter in ("difflab/core/.ipynb_checkpoints/unet-checkpoint.py", "difflab/core/.unet.py.swp",
                   "difflab/sampling/samplers.py~", "difflab/.DS_Store", "stages/.pytest_cache/v/x"):
        (root / litter).parent.mkdir(parents=True, exist_ok=True)
        (root / litter).write_text("x")
    assert dvc_status(root) == {}
    assert run(["git", "status", "--porcelain"], root).stdout == ""


# ---------------------------------------------------------------- a stranger's clone

def _stranger() -> pwd.struct_passwd:
    """A non-root user for the test, created when missing (we run as root)."""
    try:
        return pwd.getpwnam(STRANGER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", STRANGER], check=True,
                       capture_output=True, env=user_env())
        return pwd.getpwnam(STRANGER)


def _as(user: pwd.struct_passwd, cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                         capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} as {user.pw_name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def _stranger_python(user: pwd.struct_passwd, place: Path, env: dict) -> Path | None:
    """A bin dir whose `python` and `dvc` the stranger can run: this venv's when its interpreter is readable by
    others, else the stranger's own venv on the system's python of the same version, seeing this venv's packages
    through a .pth file (as a user's venv holds the same pinned packages)."""
    def works(python: str) -> bool:
        try:
            return subprocess.run([python, "-c", "import dvc, torch"], env=env, user=user.pw_uid, group=user.pw_gid,
                                  extra_groups=[], capture_output=True).returncode == 0
        except PermissionError:
            return False

    if works(sys.executable):
        return Path(sys.executable).parent
    system = shutil.which(f"python{PY}", path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        return None
    venv = place / "venv"
    _as(user, [system, "-m", "venv", "--without-pip", str(venv)], place, env)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "difflab-test-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (venv / "bin" / "dvc").write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom dvc.cli import main\n"
                                       "sys.exit(main())\n")
    (venv / "bin" / "dvc").chmod(0o755)
    return venv / "bin" if works(str(venv / "bin" / "python")) else None


def _written(directory: Path, depth: int = 2) -> set[str]:
    """Paths under directory, to `depth` levels (what a run left there)."""
    found = set()
    for p in directory.rglob("*"):
        rel = p.relative_to(directory)
        if len(rel.parts) <= depth:
            found.add(str(rel))
    return found


def outs_md5(lock: dict) -> dict[str, str]:
    return {o["path"]: o.get("md5", "") for stage in lock["stages"].values() for o in stage.get("outs", [])}


@pytest.mark.e2e
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create the other user the stranger's clone runs as")
def test_a_strangers_clone_reproduces_the_same_bytes(pipeline):
    root = pipeline
    user = _stranger()
    place = Path(tempfile.mkdtemp(prefix="difflab-stranger-"))
    try:
        home, tmp, clone = place / "home", place / "tmp", place / "a stranger's clone"
        for d in (home, tmp):
            d.mkdir()
        shutil.chown(place, user.pw_uid, user.pw_gid)
        for d in (home, tmp):
            shutil.chown(d, user.pw_uid, user.pw_gid)
        env = user_env(base={"HOME": str(home), "LANG": "C", "USER": user.pw_name, "LOGNAME": user.pw_name,
                             "TMPDIR": str(tmp), "PATH": "/usr/local/bin:/usr/bin:/bin",
                             # the same machine settings as the normal run: torch's thread count changes float sums
                             **{k: os.environ[k] for k in ("OMP_NUM_THREADS",) if k in os.environ}})
        bin_dir = _stranger_python(user, place, env)
        if bin_dir is None:
            pytest.skip(f"user {STRANGER} can run neither {sys.executable} nor a system python{PY} to build a venv")
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        # cloned as if from a server: git refuses to read another user's repository, so we clone and hand it over
        run(["git", "clone", "-q", "--no-hardlinks", str(root), str(clone)], place)
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(clone)], check=True, env=user_env())
        _as(user, ["dvc", "repro"], clone, env)
        assert outs_md5(yaml.safe_load((clone / "dvc.lock").read_text())) == \
            outs_md5(yaml.safe_load((root / "dvc.lock").read_text()))
        assert _as(user, ["dvc", "status", "--json"], clone, env).stdout.strip() in ("{}", "")
        assert _as(user, ["git", "status", "--porcelain"], clone, env).stdout == ""
        outside = {f"~/{p}" for p in _written(home)} | {f"$TMPDIR/{p}" for p in _written(tmp)}
        readme = (REPO / "README.md").read_text()
        listed = re.search(r"\*\*Written outside the repo\.\*\*(.*?)\n\n", readme, re.S)
        assert listed, "README lists what the project writes outside the repo under **Written outside the repo.**"
        documented = [w.replace("$USER", user.pw_name).rstrip("/")
                      for w in re.findall(r"`([~$][^`]*)`", listed.group(1))]
        unlisted = sorted(p for p in outside  # a documented path, inside one, or a directory holding one
                          if not any(p == w or p.startswith(w + "/") or w.startswith(p + "/") for w in documented))
        assert not unlisted, f"written outside the repo but not listed in the README: {unlisted}"
    finally:
        shutil.rmtree(place, ignore_errors=True)


# ---------------------------------------------------------------- code deps at the grain of the code

# The files holding sampler, CFG, reverse-process, inference-fold and metric functions; every function in them.
SAMPLING_AND_METRICS = ("difflab/sampling/samplers.py", "difflab/sampling/choice.py", "difflab/core/reverse.py",
                        "difflab/core/inference.py", "difflab/evaluation/metrics.py")


def functions(path: Path) -> list[ast.FunctionDef]:
    """Top-level functions and methods of top-level classes."""
    tree = ast.parse(path.read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        found += [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    return found


def edit_one_line(path: Path, func: ast.FunctionDef) -> None:
    """Insert a no-op statement as the first line of the function's body (after its docstring)."""
    lines = path.read_text().split("\n")
    first = func.body[0]
    is_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                    str)
    at = first.end_lineno if is_doc and len(func.body) > 1 else first.lineno - 1
    lines.insert(at, " " * first.col_offset + "_scratch_edit = None")
    path.write_text("\n".join(lines))


@pytest.mark.e2e
def test_a_sampler_or_metric_edit_reruns_exactly_the_stages_that_import_it(pipeline):
    root = pipeline
    names = run(["dvc", "stage", "list", "--name-only"], root).stdout.split()
    definitions = stage_definitions(root)
    closures = {name: import_closure(script_of(definitions[name.split("@")[0]], root), root) for name in names}
    table, problems = {}, []
    for rel in SAMPLING_AND_METRICS:
        path = root / rel
        saved = path.read_text()
        expected = {name for name, closure in closures.items() if path in closure}
        assert not {n for n in expected if n.startswith("train@") or n == "classifier"}, \
            f"{rel} is in the import closure of training or the classifier: {sorted(expected)}"
        for func in functions(path):
            edit_one_line(path, func)
            try:
                listed = set(dvc_status(root))
            finally:
                path.write_text(saved)
            table[f"{rel}:{func.name}"] = sorted(listed)
            if listed != expected:
                problems.append(f"{rel}:{func.name}: dvc status lists {sorted(listed)}, expected {sorted(expected)}")
    print("\n".join(f"{k} -> {', '.join(v)}" for k, v in table.items()))
    assert not problems, "\n".join(problems)
    assert dvc_status(root) == {}
