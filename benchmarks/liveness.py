"""Which of the library's functions and classes a benchmark can run: its *live* definitions.

A benchmark imports all of ``torchgrow`` (the package imports its subpackages), so
module-level reachability (:func:`benchmarks.freshness.reachable`) says that every
result depends on every function. Most do not: NeST's study never calls LEMON. This
module finds, by reading the code, the top-level functions and classes a benchmark's
scripts could reach by name, so that a change to any *other* definition leaves the
result fresh. The rules are conservative (a name that might refer to a definition
counts as a use of it):

* the roots are what the benchmark's scripts use (read as modules of their own), the names and attributes in every top-level statement of a reachable module
  that is not a function or class definition (it runs at import: registries,
  registrations, constants; an ``__all__`` list only names what a star import takes) and
  every definition with a decorator that could register it;
* a live definition makes live what it uses: a bare name resolves in its own module
  (its definitions, or through the module's imports to the definition they bind, ``as``
  names followed); an attribute of a name bound to one of the package's modules
  (``ops.widen``) resolves in that module, one of a name imported from outside the
  package (``np.load``, ``F.relu``) or of what a call returns (``Loader(f).load()``)
  names nothing of it, and any other attribute (``obj.widen``) or identifier-like string in its code (``getattr(x, "widen")``) makes
  every definition of that name in any module live, and every definition a module
  imports under that name;
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


Uses = tuple[set[str], set[tuple[str | None, str]], set[str]]


def _uses(node: ast.AST, strings: bool = True) -> Uses:
    """``(bare names, attributes as (base name or None, attribute), identifier strings)`` a node
    uses (strings only with ``strings``)."""
    bare: set[str] = set()
    attrs: set[tuple[str | None, str]] = set()
    words: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            bare.add(n.id)
        elif isinstance(n, ast.Attribute) and not isinstance(n.value, ast.Call):
            # an attribute of what a call returns is one of an object's, not a module's: a
            # function stored on an object was named where it was stored (the package never
            # imports its own modules by a computed name, the assumption below)
            attrs.add((n.value.id if isinstance(n.value, ast.Name) else None, n.attr))
        elif strings and isinstance(n, ast.Constant) and isinstance(n.value, str):
            if _IDENT.fullmatch(n.value):
                words.add(n.value)
    return bare, attrs, words


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
    def __init__(self, name: str, is_package: bool, tree: ast.Module, top: str) -> None:
        self.name, self.tree = name, tree
        self._uses: dict[int, Uses] = {}
        self.package = name if is_package else name.rpartition(".")[0]
        self.defs: dict[str, list[Defn]] = {}
        self.top: list[ast.stmt] = []
        for stmt in tree.body:
            if isinstance(stmt, Defn):
                self.defs.setdefault(stmt.name, []).append(stmt)
            else:
                self.top.append(stmt)
        self.imports: dict[str, tuple[str, str]] = {}  # bound name -> (module, name there)
        self.modules: dict[str, str] = {}  # bound name -> module (``import a.b as c``)
        self.external: set[str] = set()  # names bound to things from outside the package
        self.star: list[str] = []
        for n in ast.walk(tree):  # imports inside functions bind names too
            if isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.split(".")[0] != top:
                        self.external.add(a.asname or a.name.split(".")[0])
                    else:
                        self.modules[a.asname or a.name.split(".")[0]] = (
                            a.name if a.asname else a.name.split(".")[0]
                        )
                continue
            if not isinstance(n, ast.ImportFrom):
                continue
            if n.level:
                parts = self.package.split(".")
                base = ".".join(parts[: len(parts) - n.level + 1])
                mod = f"{base}.{n.module}" if n.module else base
            else:
                mod = n.module or ""
            for a in n.names:
                if n.level == 0 and mod.split(".")[0] != top:
                    self.external.add(a.asname or a.name)
                elif a.name == "*":
                    self.star.append(mod)
                else:
                    self.imports[a.asname or a.name] = (mod, a.name)

    def uses(self, node: ast.AST, strings: bool = True) -> Uses:
        """:func:`_uses` of one of this module's statements, computed once."""
        if id(node) not in self._uses:
            self._uses[id(node)] = _uses(node, strings)
        return self._uses[id(node)]


@functools.lru_cache(maxsize=1024)
def _parsed(name: str, is_package: bool, text: str, top: str) -> _Module:
    return _Module(name, is_package, ast.parse(text), top)


def live_definitions(
    src: Path,
    paths: list[Path],
    scripts: list[str],
    read: Callable[[Path], str | None] | None = None,
    top: str = "torchgrow",
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
    top : str
        The package's name (imports of anything else are outside it).
    """
    read = read or (lambda p: p.read_text())
    modules: dict[str, _Module] = {}
    by_path: dict[str, Path] = {}
    for path in paths:
        text = read(path)
        if text is None:
            continue
        name = _module_name(src, path)
        modules[name] = _parsed(name, path.name == "__init__.py", text, top)
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

    def module_named(mod: str, base: str) -> str | None:
        """The package module that name ``base`` is bound to in module ``mod``, if any."""
        m = modules[mod]
        if base in m.modules:
            return m.modules[base] if m.modules[base] in modules else None
        if base in m.imports:
            where, name = m.imports[base]
            full = f"{where}.{name}" if where else name
            return full if full in modules else None
        return None

    def use(mod: str, node: ast.AST, strings: bool = True) -> None:
        m = modules[mod]
        bare, attrs, words = m.uses(node, strings)
        for name in bare:
            resolve(mod, name)
        for base, attr in attrs:
            if base is not None and base in m.external:
                continue  # numpy.load, torch.save, F.relu: not the package's
            target = None if base is None else module_named(mod, base)
            if target is not None:
                resolve(target, attr)  # ops.widen: that module's widen
            else:
                anywhere({attr})  # obj.widen: any definition of that name
        anywhere(words)

    for i, text in enumerate(scripts):  # each script a module of its own, live as a whole
        key = f"<script {i}>"
        modules[key] = _parsed(key, False, text, top)
        use(key, modules[key].tree)
    for mod, m in modules.items():
        if mod.startswith("<script"):
            continue
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
        if mod in by_path:
            out[by_path[mod]].add(name)
    return out
