"""The freshness rules of the benchmark results: which changes to the library are only additions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.freshness import change_reason, new_module_reason, reachable  # noqa: E402
from benchmarks.liveness import live_definitions  # noqa: E402

OLD = '''"""A module."""
from .a import f
import torch

def g(x):
    return f(x) + 1

MODELS = {"mlp": g}
__all__ = ["g", "MODELS"]
'''


@pytest.mark.parametrize(
    "new",
    [
        OLD,
        OLD.replace('"""A module."""', '"""A module, with a new docstring."""'),
        OLD.replace("from .a import f", "from .a import f, h"),
        OLD.replace('{"mlp": g}', '{"mlp": g, "gpt": gpt}').replace(
            "MODELS = ", "from .gpt import gpt\nMODELS = "
        ),
        OLD.replace('["g", "MODELS"]', '["g", "gpt", "MODELS"]') + "\ndef gpt():\n    return 2\n",
        OLD + "\n@dataclass\nclass Config:\n    width: int = 4\n\nLIMIT = 3 * 4\n",
    ],
)
def test_additions_keep_results_fresh(new):
    assert change_reason(OLD, new) is None


@pytest.mark.parametrize(
    ("new", "why"),
    [
        (OLD.replace("f(x) + 1", "f(x) + 2"), "gone or changed"),
        (OLD.replace("import torch\n", ""), "gone or changed"),
        (OLD + "\nregister(g)\n", "runs at import"),
        (OLD + "\nTABLE = build()\n", "calls code"),
        (OLD + "\n@register\ndef h():\n    pass\n", "decorator"),
        (OLD + "\nimport transformers\n", "imports"),
        (OLD.replace('{"mlp": g}', '{"mlp": f}'), "gone or changed"),
        (OLD + "\ndef g(x):\n    return 0\n", "rebinds"),
    ],
)
def test_changes_that_can_move_a_result_make_it_stale(new, why):
    reason = change_reason(OLD, new)
    assert reason is not None and why in reason


def test_a_registry_the_benchmark_names_may_not_grow():
    new = OLD.replace('{"mlp": g}', '{"mlp": g, "gpt": g}')
    assert change_reason(OLD, new) is None
    assert change_reason(OLD, new, watched="EVENT_MODELS = {...}") is None
    assert "MODELS" in change_reason(OLD, new, watched="for name in models.MODELS: ...")


def test_a_new_module_is_fresh_only_if_importing_it_registers_nothing():
    inert = '"""Doc."""\nfrom torch import nn\n__all__ = ["Block"]\n\nclass Block(nn.Module):\n    pass\n'
    assert new_module_reason(inert) is None
    assert "runs at import" in new_module_reason(inert + "\nregister(Block)\n")


def test_only_the_modules_a_benchmark_can_import_are_what_it_depends_on(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from . import core\n",
        "core.py": "def f():\n    from .sub import lazy\n    return lazy\n",
        "sub/__init__.py": "",
        "sub/lazy.py": "from ..helpers import h\n",
        "helpers.py": "",
        "cli.py": "from . import report\n",
        "report.py": "",
        "__main__.py": "from .cli import main\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    got = {p.relative_to(pkg).as_posix() for p in reachable(tmp_path, ["import pkg"], top="pkg")}
    # the import inside a function counts; cli, report and __main__ cannot be reached
    assert got == {"__init__.py", "core.py", "sub/__init__.py", "sub/lazy.py", "helpers.py"}
    script = 'subprocess.run([sys.executable, "-m", "pkg", "run"])'
    got = {p.relative_to(pkg).as_posix() for p in reachable(tmp_path, [script], top="pkg")}
    assert {"__main__.py", "cli.py", "report.py"} <= got  # a process it starts counts too


def test_only_definitions_a_benchmark_can_run_are_live(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    files = {
        "__init__.py": (
            "from .core import train, Lemon as L\nfrom . import extra\n"
            '__all__ = ["train", "L", "orphan"]\n'
        ),
        "core.py": (
            "from .helpers import step as _step\n\n"
            "def train(x):\n    return _step(x)\n\n"
            "class Lemon:\n    def run(self):\n        return expand()\n\n"
            "def expand():\n    return 2\n\n"
            "def orphan():\n    return train(1)\n"
        ),
        "helpers.py": (
            "def step(x):\n    return x\n\n"
            "def lazy():\n    return 0\n\n"
            "def hooked():\n    return 1\n\n"
            "def by_name():\n    return 3\n\n"
            "@register\ndef rule():\n    return tail()\n\n"
            "def tail():\n    return 4\n"
        ),
        "extra.py": (
            "TABLE = {'k': lambda: None, 'name': 'unused'}\n\ndef unused():\n    return 5\n\n"
            "def expand():\n    return 6\n"
        ),
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    paths = reachable(tmp_path, ["import pkg"], top="pkg")
    script = "import pkg\npkg.train(3)\ngetattr(pkg.helpers, 'by_name')()\nobj.hooked()\n"
    live = {
        p.name: names for p, names in live_definitions(tmp_path, paths, [script], top="pkg").items()
    }
    # train is used; step through its "as" import; the rule registers at import (and uses tail);
    # by_name through a string, hooked through an attribute; Lemon, expand, orphan, lazy and
    # unused nobody can call (an __all__ entry is not a use)
    assert live["core.py"] == {"train"}
    assert live["helpers.py"] == {"step", "by_name", "hooked", "rule", "tail"}
    assert live["extra.py"] == set()
    changed = files["core.py"].replace("return 2", "return 3")
    assert change_reason(files["core.py"], changed, live=live["core.py"]) is None
    assert change_reason(files["core.py"], changed) is not None  # without liveness: stale
    changed = files["core.py"].replace("return _step(x)", "return _step(x) + 1")
    assert "gone or changed" in change_reason(files["core.py"], changed, live=live["core.py"])
    script = "from pkg import L\nL().run()\n"
    live = {
        p.name: names for p, names in live_definitions(tmp_path, paths, [script], top="pkg").items()
    }
    assert {"Lemon", "expand"} <= live["core.py"]  # through the "as" name; a class as a whole
    assert live["extra.py"] == set()  # core's expand, not extra's: Lemon calls it by its bare name

    def live_for(script):
        found = live_definitions(tmp_path, paths, [script], top="pkg")
        return {p.name: names for p, names in found.items()}

    # an attribute of a package module resolves there; of an outside name, nowhere
    assert live_for("from pkg import core\ncore.expand()\n")["extra.py"] == set()
    assert live_for("x.expand()\n")["extra.py"] == {"expand"}  # any object: every expand
    assert live_for("import numpy as np\nnp.hooked()\n")["helpers.py"] == {"rule", "tail"}


def test_the_library_never_looks_its_own_definitions_up_by_a_computed_name():
    """The liveness analysis's one assumption (benchmarks/liveness.py): no ``getattr`` of a
    torchgrow module with a computed name, no ``globals()``, no ``sys.modules`` lookups but of
    another package by its literal name (``sys.modules.get("torch")``). The safe checkpoint
    loader imports classes by the names a run saved (classes it used)."""
    src = Path(__file__).resolve().parents[1] / "src" / "torchgrow"
    allowed = {"io/safety.py"}
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        tree = ast.parse(path.read_text())
        package = ".".join(["torchgrow", *path.relative_to(src).parent.parts])
        modules = set()  # names this module binds to torchgrow modules
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and (
                n.level or (n.module or "").startswith("torchgrow")
            ):
                base = (
                    src.parent.joinpath(
                        *package.split(".")[: len(package.split(".")) - n.level + 1]
                    )
                    if n.level
                    else src.parent
                )
                base = base.joinpath(*(n.module or "").split(".")) if n.module else base
                for a in n.names:
                    if (base / f"{a.name}.py").exists() or (base / a.name / "__init__.py").exists():
                        modules.add(a.asname or a.name)
            elif isinstance(n, ast.Import):
                modules |= {a.asname or a.name for a in n.names if a.name.startswith("torchgrow")}
        for n in ast.walk(tree):
            if not isinstance(n, ast.Call):
                continue
            f = n.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
            if name == "globals":
                found.append(f"{rel}:{n.lineno} {name}()")
            if name in ("getattr", "hasattr") and len(n.args) >= 2:
                obj, key = n.args[0], n.args[1]
                if (
                    isinstance(obj, ast.Name)
                    and obj.id in modules
                    and not isinstance(key, ast.Constant)
                ):
                    found.append(f"{rel}:{n.lineno} {name}({obj.id}, ...)")
        for n in ast.walk(tree):  # sys.modules[...] / sys.modules.get(...) but of another package
            if not (isinstance(n, ast.Attribute) and n.attr == "modules"):
                continue
            if not (isinstance(n.value, ast.Name) and n.value.id == "sys"):
                continue
            parent = next(
                (p for p in ast.walk(tree) if n in ast.iter_child_nodes(p)), None
            )  # the subscript or the .get attribute around it
            key = None
            if isinstance(parent, ast.Subscript):
                key = parent.slice
            elif isinstance(parent, ast.Attribute) and parent.attr == "get":
                call = next(
                    (c for c in ast.walk(tree) if isinstance(c, ast.Call) and c.func is parent),
                    None,
                )
                key = call.args[0] if call is not None and call.args else None
            named = isinstance(key, ast.Constant) and isinstance(key.value, str)
            if not (named and not key.value.startswith("torchgrow")):
                found.append(f"{rel}:{n.lineno} sys.modules")
    assert [f for f in found if f.split(":")[0] not in allowed] == []
