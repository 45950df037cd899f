"""Which of the library's functions and classes a benchmark can run: its *live* definitions.

A benchmark imports all of ``torchgrow`` (the package imports its subpackages), so
module-level reachability (:func:`benchmarks.freshness.reachable`) says that every
result depends on every function. Most do not: NeST's study never calls LEMON. This
module finds, by reading the code, the top-level functions and classes a benchmark's
scripts could reach by name, so that a change to any *other* definition leaves the
result fresh. The rules are conservative (a name that might refer to a definition
counts as a use of it):

* the roots are every name, attribute and identifier-like string in the benchmark's
  scripts, the names and attributes in every top-level statement of a reachable module
  that is not a function or class definition (it runs at import: registries,
  registrations, constants; an ``__all__`` list only names what a star import takes) and
  every definition with a decorator that could register it;
* a live definition makes live what it uses: a bare name resolves in its own module
  (its definitions, or through the module's imports to the definition they bind, ``as``
  names followed); an attribute (``obj.name``) or an identifier-like string in its code
  (``getattr(x, "name")``) makes every definition of that name in any module live, and
  every definition a module imports under that name;
* a class is live or dead as a whole (any of its methods may be called implicitly).

A definition that is neither a root nor reachable from one cannot run in the
benchmark, so changing or deleting it cannot move the result. The one assumption:
torchgrow does not look its own functions and classes up by a name computed from
module-level data (a string in a description table names nothing); no
``getattr`` of a torchgrow module or class with a computed name
(``tests/test_freshness.py`` checks the source for it).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["live_definitions"]

_IDENT = re.compile(r"[A-Za-z_]\w*")
_HARMLESS = {"dataclass", "staticmethod", "classmethod", "property"}
Defn = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _uses(node: ast.AST, strings: bool = True) -> tuple[set[str], set[str]]:
    """``(bare names, global names)`` a node uses: names vs attributes (and, with ``strings``,
    identifier-like strings)."""
    bare, anywhere = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            bare.add(n.id)
        elif isinstance(n, ast.Attribute):
            anywhere.add(n.attr)
        elif strings and isinstance(n, ast.Constant) and isinstance(n.value, str):
            if _IDENT.fullmatch(n.value):
                anywhere.add(n.value)
    return bare, anywhere


def _registers(d: Defn) -> bool:
    """Whether a definition's decorators could do more than wrap it (register it somewhere)."""
    for dec in d.decorator_list:
        base = dec.func if isinstance(dec, ast.Call) else dec
        if not (isinstance(base, ast.Name) and base.id in _HARMLESS):
            return True
    return False


def _all_list(stmt: ast.stmt) -> bool:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _module_name(src: Path, path: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _Module:
    def __init__(self, name: str, is_package: bool, tree: ast.Module) -> None:
        self.name, self.tree = name, tree
        self._uses: dict[int, tuple[set[str], set[str]]] = {}
        self.package = name if is_package else name.rpartition(".")[0]
        self.defs: dict[str, list[Defn]] = {}
        self.top: list[ast.stmt] = []
        for stmt in tree.body:
            if isinstance(stmt, Defn):
                self.defs.setdefault(stmt.name, []).append(stmt)
            else:
                self.top.append(stmt)
        self.imports: dict[str, tuple[str, str]] = {}  # bound name -> (module, name there)
        self.star: list[str] = []
        for n in ast.walk(tree):  # imports inside functions bind names too
            if not isinstance(n, ast.ImportFrom):
                continue
            if n.level:
                parts = self.package.split(".")
                base = ".".join(parts[: len(parts) - n.level + 1])
                mod = f"{base}.{n.module}" if n.module else base
            else:
                mod = n.module or ""
            for a in n.names:
                if a.name == "*":
                    self.star.append(mod)
                else:
                    self.imports[a.asname or a.name] = (mod, a.name)

    def uses(self, node: ast.AST, strings: bool = True) -> tuple[set[str], set[str]]:
        """:func:`_uses` of one of this module's statements, computed once."""
        if id(node) not in self._uses:
            self._uses[id(node)] = _uses(node, strings)
        return self._uses[id(node)]


@functools.lru_cache(maxsize=1024)
def _parsed(name: str, is_package: bool, text: str) -> _Module:
    return _Module(name, is_package, ast.parse(text))


def live_definitions(
    src: Path,
    paths: list[Path],
    scripts: list[str],
    read: Callable[[Path], str | None] | None = None,
) -> dict[Path, set[str]]:
    """The names of the live top-level definitions of each module (see the module docstring).

    Parameters
    ----------
    src : Path
        The folder that holds the package.
    paths : list of Path
        The package's modules the benchmark can import (:func:`freshness.reachable`).
    scripts : list of str
        The benchmark's own scripts (roots: everything they name).
    read : callable, optional
        The source of a module (default: the file as it is now); ``None`` if it does
        not exist (a module at an older commit).
    """
    read = read or (lambda p: p.read_text())
    modules: dict[str, _Module] = {}
    by_path: dict[str, Path] = {}
    for path in paths:
        text = read(path)
        if text is None:
            continue
        name = _module_name(src, path)
        modules[name] = _parsed(name, path.name == "__init__.py", text)
        by_path[name] = path
    live: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = []

    def anywhere(names: set[str]) -> None:
        for mod, m in modules.items():  # a definition, or a name a module imports (``as``)
            for n in names & (m.defs.keys() | m.imports.keys()):
                resolve(mod, n)

    def resolve(mod: str, name: str, depth: int = 0) -> None:
        """Mark what ``name`` means in module ``mod``: its definition, or the one it imports."""
        m = modules.get(mod)
        if m is None or depth > 20:
            return
        if name in m.defs:
            todo.append((mod, name))
        elif name in m.imports:
            resolve(*m.imports[name], depth + 1)
        else:
            for star in m.star:
                resolve(star, name, depth + 1)

    def use(mod: str, node: ast.AST, strings: bool = True) -> None:
        bare, glob = modules[mod].uses(node, strings)
        for name in bare:
            resolve(mod, name)
        anywhere(glob)

    for text in scripts:
        bare, glob = _uses(ast.parse(text))
        anywhere(bare | glob)
    for mod, m in modules.items():
        for stmt in m.top:
            if not _all_list(stmt):
                use(mod, stmt, strings=False)  # data: its strings name nothing by themselves
        for name, defs in m.defs.items():
            if any(_registers(d) for d in defs):
                todo.append((mod, name))
    while todo:
        key = todo.pop()
        if key in live:
            continue
        live.add(key)
        for d in modules[key[0]].defs[key[1]]:
            use(key[0], d)
    out: dict[Path, set[str]] = {p: set() for p in by_path.values()}
    for mod, name in live:
        out[by_path[mod]].add(name)
    return out
