"""Nothing read from shared storage runs code: across the library (difflab/, stages/, bench/) every torch.load
passes weights_only=True, YAML is read with a safe loader, and the one pickle read is of bytes whose pinned sha256
was checked first. The checks read the code with `ast`, and show on planted snippets that they can fail."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "difflab" / "data" / "mnist.py"
# The one pickle read: (file, function). Its bytes must come from the function that checks their pinned sha256.
PINNED_PICKLE = ("difflab/data/mnist.py", "arrays_from_pickle_gz")
VERIFIER, PIN = "read_pickle_from_wheel", "PYPI_PICKLE_SHA256"

TORCH_LOADS = {"torch.load", "torch.serialization.load"}
PICKLE_LOADS = {f"{module}.{name}" for module in ("pickle", "_pickle", "dill", "cloudpickle")
                for name in ("load", "loads", "Unpickler")} | {
    "joblib.load", "marshal.load", "marshal.loads", "pandas.read_pickle"}
YAML_LOADS = {"yaml.load", "yaml.load_all"}
YAML_UNSAFE = {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"}
SAFE_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader"}


def library() -> list[Path]:
    return sorted(p for top in ("difflab", "stages", "bench") for p in (REPO / top).rglob("*.py"))


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (`import torch as t` gives t -> torch)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """The imported dotted name an expression stands for (`t.serialization.load` -> torch.serialization.load)."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([names.get(node.id, node.id), *reversed(attrs)])


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _calls(tree: ast.AST):
    """(qualified name of the enclosing function, or None; call) for every call in a module."""
    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            if isinstance(child, ast.Call):
                yield scope, child
            yield from visit(child, inner)
    yield from visit(tree, None)


def unsafe_loads(path: Path, root: Path = REPO) -> list[str]:
    """`file:line: what` for every load in `path` that could run code carried by the file it reads."""
    tree = ast.parse(path.read_text(), str(path))
    names, rel = _imports(tree), path.relative_to(root).as_posix()
    found = []
    for function, call in _calls(tree):
        name, where = _dotted(call.func, names), f"{rel}:{call.lineno}"
        if name in TORCH_LOADS:
            flag = _keyword(call, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where}: {name} without weights_only=True")
        elif name in PICKLE_LOADS and (rel, function) != PINNED_PICKLE:
            found.append(f"{where}: {name} outside {PINNED_PICKLE[1]}")
        elif name == "numpy.load":
            flag = _keyword(call, "allow_pickle")
            if not (flag is None or isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{where}: numpy.load with allow_pickle")
        elif name in YAML_UNSAFE:
            found.append(f"{where}: {name}")
        elif name in YAML_LOADS:
            loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or _dotted(loader, names) not in SAFE_LOADERS:
                found.append(f"{where}: {name} without Loader=yaml.SafeLoader or yaml.CSafeLoader")
    return found


def pickle_problems(mnist_source: str, library_sources: dict[str, str]) -> list[str]:
    """Why the pinned pickle read is not safe: its verifier must raise on a sha256 mismatch before it returns the
    bytes, and the unpickling function must only ever be called on bytes straight from the verifier."""
    functions = {f.name: f for f in ast.parse(mnist_source).body if isinstance(f, ast.FunctionDef)}
    if VERIFIER not in functions or PINNED_PICKLE[1] not in functions:
        return [f"{VERIFIER} or {PINNED_PICKLE[1]} is gone from {PINNED_PICKLE[0]}"]
    body, problems = functions[VERIFIER].body, []
    returns = [i for i, s in enumerate(body) if isinstance(s, ast.Return)]
    if len(returns) != 1 or not isinstance(body[returns[0]].value, ast.Name):
        return [f"{VERIFIER} must end in one `return <bytes>`"]
    end, blob = returns[0], body[returns[0]].value.id
    checks = [i for i, s in enumerate(body[:end])
              if isinstance(s, ast.If) and isinstance(s.body[-1], ast.Raise) and _compares_pin(s.test, blob)]
    if not checks:
        problems.append(f"{VERIFIER} returns `{blob}` without first raising when _sha256({blob}) != {PIN}")
    elif any(isinstance(n, ast.Name) and n.id == blob and isinstance(n.ctx, ast.Store)
             for s in body[checks[-1] + 1:end] for n in ast.walk(s)):
        problems.append(f"{VERIFIER} changes `{blob}` after checking its sha256")
    for rel, source in library_sources.items():
        tree = ast.parse(source)
        names, called = _imports(tree), set()
        for _, call in _calls(tree):
            if (_dotted(call.func, names) or "").split(".")[-1] != PINNED_PICKLE[1]:
                continue
            called.add(id(call.func))
            fed = call.args[0] if call.args else None
            if not (isinstance(fed, ast.Call) and (_dotted(fed.func, names) or "").split(".")[-1] == VERIFIER):
                problems.append(f"{rel}:{call.lineno}: {PINNED_PICKLE[1]} given bytes not straight from {VERIFIER}")
        problems += [f"{rel}:{n.lineno}: {PINNED_PICKLE[1]} passed around, not called" for n in ast.walk(tree)
                     if PINNED_PICKLE[1] in (getattr(n, "id", None), getattr(n, "attr", None))
                     and id(n) not in called]
    return problems


def _compares_pin(test: ast.expr, blob: str) -> bool:
    """`_sha256(<blob>) != PIN` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.NotEq)):
        return False
    sides = [test.left, test.comparators[0]]
    hashed = [s for s in sides if isinstance(s, ast.Call) and getattr(s.func, "id", None) == "_sha256"
              and [getattr(a, "id", None) for a in s.args] == [blob]]
    return len(hashed) == 1 and any(isinstance(s, ast.Name) and s.id == PIN for s in sides)


def sources() -> dict[str, str]:
    return {p.relative_to(REPO).as_posix(): p.read_text() for p in library()}


# ---------------------------------------------------------------- the library

def test_the_library_loads_nothing_that_could_run_code():
    files = library()
    assert len(files) > 40 and {"stages", "bench", "difflab"} <= {p.relative_to(REPO).parts[0] for p in files}
    assert [line for p in files for line in unsafe_loads(p)] == []


def test_the_one_pickle_reads_only_bytes_whose_pinned_sha256_matched():
    assert pickle_problems(MNIST.read_text(), sources()) == []
    calls = [c for _, c in _calls(ast.parse(MNIST.read_text()))
             if (_dotted(c.func, {}) or "").split(".")[-1] == PINNED_PICKLE[1]]
    assert calls, f"nothing calls {PINNED_PICKLE[1]}: the check above would hold vacuously"


# ---------------------------------------------------------------- the checks can fail

BAD = {
    "torch default": "import torch\ntorch.load('x')\n",
    "torch false": "import torch\ntorch.load('x', map_location='cpu', weights_only=False)\n",
    "torch not literal": "import torch as t\nt.load('x', weights_only=flag)\n",
    "torch spread": "import torch\ntorch.load('x', **{'weights_only': True})\n",
    "torch imported name": "from torch import load\nload('x', map_location='cpu')\n",
    "torch serialization": "import torch\ntorch.serialization.load('x')\n",
    "pickle loads": "import pickle\npickle.loads(b'')\n",
    "pickle aliased": "from pickle import load as read\nread(f)\n",
    "pickle unpickler": "import pickle\npickle.Unpickler(f).load()\n",
    "pickle in a method": "import pickle\nclass A:\n    def arrays_from_pickle_gz(self, b):\n"
                         "        return pickle.loads(b)\n",
    "numpy pickle": "import numpy as np\nnp.load('x.npy', allow_pickle=True)\n",
    "yaml default": "import yaml\nyaml.load(s)\n",
    "yaml full loader": "import yaml\nyaml.load(s, Loader=yaml.FullLoader)\n",
    "yaml positional unsafe": "import yaml\nyaml.load(s, yaml.UnsafeLoader)\n",
    "yaml unsafe_load": "import yaml\nyaml.unsafe_load(s)\n",
    "yaml full_load": "from yaml import full_load\nfull_load(s)\n",
}
GOOD = {
    "torch weights only": "import torch\ntorch.load('x', map_location='cpu', weights_only=True)\n",
    "yaml safe_load": "import yaml\nyaml.safe_load(s)\n",
    "yaml safe loader": "import yaml\nyaml.load(s, Loader=yaml.CSafeLoader)\n",
    "yaml imported safe loader": "import yaml\nfrom yaml import SafeLoader\nyaml.load_all(s, SafeLoader)\n",
    "numpy arrays": "import numpy as np\nnp.load('x.npy')\n",
    "json": "import json\njson.load(f)\n",
}


@pytest.mark.parametrize("snippet", BAD)
def test_the_check_flags_a_load_that_could_run_code(tmp_path, snippet):
    path = tmp_path / "difflab" / "data" / "mnist.py"  # even the pinned pickle's file allows no other reads
    path.parent.mkdir(parents=True)
    path.write_text(BAD[snippet])
    found = unsafe_loads(path, tmp_path)
    assert len(found) == 1 and found[0].startswith("difflab/data/mnist.py:"), found


@pytest.mark.parametrize("snippet", GOOD)
def test_the_check_passes_a_load_of_data(tmp_path, snippet):
    path = tmp_path / "m.py"
    path.write_text(GOOD[snippet])
    assert unsafe_loads(path, tmp_path) == []


def test_the_check_flags_the_pinned_pickle_moved_or_fed_unchecked_bytes(tmp_path):
    source = MNIST.read_text()
    outside = tmp_path / "difflab" / "data" / "mnist.py"
    outside.parent.mkdir(parents=True)
    outside.write_text(source.replace(f"def {PINNED_PICKLE[1]}(", "def convert(", 1))
    assert any("outside" in line for line in unsafe_loads(outside, tmp_path))

    unchecked = source.replace(f"if _sha256(member) != {PIN}:", "if False:", 1)
    assert unchecked != source and pickle_problems(unchecked, {}) == [
        f"{VERIFIER} returns `member` without first raising when _sha256(member) != {PIN}"]
    changed_after = source.replace("    return member\n", "    member = open('x', 'rb').read()\n    return member\n", 1)
    assert changed_after != source and pickle_problems(changed_after, {}) == [
        f"{VERIFIER} changes `member` after checking its sha256"]

    fed = {"stages/a.py": "from difflab.data import mnist\nmnist.arrays_from_pickle_gz(open('x', 'rb').read())\n",
           "stages/b.py": "from difflab.data import mnist\nconvert = mnist.arrays_from_pickle_gz\n"}
    assert pickle_problems(source, fed) == [
        f"stages/a.py:2: {PINNED_PICKLE[1]} given bytes not straight from {VERIFIER}",
        f"stages/b.py:2: {PINNED_PICKLE[1]} passed around, not called"]
