"""Whether a change to the library since a result was made can have changed that result.

A result depends on ``src/``; most commits that touch ``src/`` only *add* to it
(a new model family, a new operation) and leave every line an old benchmark
runs as it was. This module tells the two apart by reading the code, so that
``python -m benchmarks.render --fresh`` asks for a re-run only when one is needed.

The rules are conservative: a change keeps a result fresh only if

* a changed module keeps every top-level statement it had, in the same order
  and unchanged (``ast.dump``), except that a module docstring may change, a
  list or dict literal bound to a name may gain entries (``__all__``, a name ->
  builder registry), and a ``from x import ...`` may import more names;
* the statements it gains are function or class definitions, imports, or
  assignments without calls, each binding names the module did not have, with
  no decorators but ``dataclass``, ``staticmethod``, ``classmethod`` and
  ``property``; a new absolute import names the standard library, ``torch``
  or ``numpy``;
* a new module is *inert*: importing it only defines things (the same kinds
  of statement, a docstring, ``__all__``), so it registers nothing;
* a registry that gains entries is not named by the benchmark's own scripts
  (which could iterate over it).

A module that the benchmark's scripts cannot import at all (:func:`reachable`:
every import statement of every module they reach, those inside functions
included) cannot change the result, whatever the change to it; nor can a function
or class that the benchmark cannot run (:mod:`benchmarks.liveness`).

Anything else (a deleted module, a changed function body, a new top-level
call such as a registration) makes the result stale.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

__all__ = ["change_reason", "new_module_reason", "reachable"]

_DECORATORS = {"dataclass", "staticmethod", "classmethod", "property"}
_ABSOLUTE_OK = set(sys.stdlib_module_names) | {"torch", "numpy"}


def _docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _bound(stmt: ast.stmt) -> set[str]:
    """The names a top-level statement binds."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    if isinstance(stmt, ast.Assign):
        return {n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return {stmt.target.id}
    return set()


def _assigned_name(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
    elif isinstance(stmt, ast.AnnAssign):
        target = stmt.target
    else:
        return None
    return target.id if isinstance(target, ast.Name) else None


def _literal(stmt: ast.stmt) -> ast.expr | None:
    value = getattr(stmt, "value", None)
    return value if isinstance(value, (ast.List, ast.Tuple, ast.Dict)) else None


def _extends(old: ast.stmt, new: ast.stmt) -> str | None:
    """If ``new`` is ``old`` with more entries, the name it binds; else None."""
    if isinstance(old, ast.ImportFrom) and isinstance(new, ast.ImportFrom):
        if (old.module, old.level) != (new.module, new.level):
            return None
        old_names = {ast.dump(a) for a in old.names}
        return "" if old_names <= {ast.dump(a) for a in new.names} else None
    name = _assigned_name(old)
    if name is None or name != _assigned_name(new):
        return None
    a, b = _literal(old), _literal(new)
    if a is None or type(a) is not type(b):
        return None
    if isinstance(a, ast.Dict):
        olds = [(ast.dump(k), ast.dump(v)) for k, v in zip(a.keys, a.values, strict=True)]
        news = [(ast.dump(k), ast.dump(v)) for k, v in zip(b.keys, b.values, strict=True)]
    else:
        olds = [ast.dump(e) for e in a.elts]
        news = [ast.dump(e) for e in b.elts]
    return name if set(olds) <= set(news) else None


def _field(stmt: ast.stmt) -> bool:
    """A dataclass field, ``name: type = field(...)``."""
    value = getattr(stmt, "value", None)
    return (
        isinstance(stmt, ast.AnnAssign)
        and isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "field"
    )


def _definition_reason(stmt: ast.stmt) -> str | None:
    """Why a new top-level statement could do something at import; None if it cannot."""
    if _docstring(stmt):
        return None
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        for dec in stmt.decorator_list:
            base = dec.func if isinstance(dec, ast.Call) else dec
            if not (isinstance(base, ast.Name) and base.id in _DECORATORS):
                return f"line {stmt.lineno}: decorator on {stmt.name!r} runs code at import"
        if isinstance(stmt, ast.ClassDef):
            for inner in stmt.body:
                if isinstance(inner, ast.Pass) or _field(inner):
                    continue
                if not isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    reason = _definition_reason(inner)
                    if reason is not None:
                        return reason
            if any(isinstance(n, ast.Call) for b in stmt.bases for n in ast.walk(b)):
                return f"line {stmt.lineno}: class {stmt.name!r} has a computed base"
        return None
    if isinstance(stmt, ast.Import):
        bad = [a.name for a in stmt.names if a.name.split(".")[0] not in _ABSOLUTE_OK]
        return f"line {stmt.lineno}: imports {bad}" if bad else None
    if isinstance(stmt, ast.ImportFrom):
        if stmt.level == 0 and (stmt.module or "").split(".")[0] not in _ABSOLUTE_OK:
            return f"line {stmt.lineno}: imports from {stmt.module}"
        return None
    if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
        return None
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and _assigned_name(stmt) is not None:
        if any(isinstance(n, ast.Call) for n in ast.walk(stmt.value or ast.Constant(None))):
            return f"line {stmt.lineno}: assignment calls code at import"
        return None
    return f"line {stmt.lineno}: top-level {type(stmt).__name__} runs at import"


def new_module_reason(source: str) -> str | None:
    """Why importing a new module could change an old result; None if it only defines things."""
    for stmt in ast.parse(source).body:
        reason = _definition_reason(stmt)
        if reason is not None:
            return reason
    return None


def _kept(body: list[ast.stmt], live: set[str] | None) -> list[ast.stmt]:
    """The top-level statements that matter: all but the docstring and, with ``live``,
    the definitions (functions, classes) the benchmark cannot run."""
    out = [s for i, s in enumerate(body) if not (i == 0 and _docstring(s))]
    if live is None:
        return out
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [s for s in out if not isinstance(s, defs) or s.name in live]


def change_reason(
    old: str, new: str, watched: str = "", live: set[str] | None = None
) -> str | None:
    """Why the change ``old -> new`` of a module could change an old result; None if additive.

    Parameters
    ----------
    old, new : str
        The module's source at the result's commit and now.
    watched : str
        Text of the benchmark's own scripts: a registry named in it may not gain entries.
    live : set of str, optional
        The module's top-level definitions the benchmark can run, at either version
        (:func:`benchmarks.liveness.live_definitions`); a change to any other
        definition is ignored. Default: every definition counts.
    """
    olds = _kept(ast.parse(old).body, live)
    news = _kept(ast.parse(new).body, live)
    old_names = set().union(*(_bound(s) for s in olds)) if olds else set()
    added: list[ast.stmt] = []
    j = 0
    for stmt in olds:
        dump = ast.dump(stmt)
        match = next(
            (i for i in range(j, len(news)) if ast.dump(news[i]) == dump),
            next((i for i in range(j, len(news)) if _extends(stmt, news[i]) is not None), None),
        )
        if match is None:
            return f"line {stmt.lineno} of the old module is gone or changed"
        added += news[j:match]
        grown = _extends(stmt, news[match]) if ast.dump(news[match]) != dump else None
        if grown and grown != "__all__" and re.search(rf"\b{re.escape(grown)}\b", watched):
            return f"registry {grown!r} gained entries and the benchmark names it"
        j = match + 1
    for cand in added + news[j:]:
        reason = _definition_reason(cand)
        if reason is not None:
            return reason
        if _bound(cand) & old_names:
            return f"line {cand.lineno}: rebinds {sorted(_bound(cand) & old_names)}"
    return None


def _module_file(src: Path, name: str) -> Path | None:
    """The file of module ``name`` (``torchgrow.ops``) under ``src``, if it is a module there."""
    base = src.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(tree: ast.AST, package: str, strings: bool = False) -> set[str]:
    """Every module an AST may import, anywhere in it (functions included), made absolute.

    ``from a import b`` counts ``a`` and ``a.b`` (``b`` may be a submodule); with
    ``strings`` (a benchmark's script, which may start processes), a string that is a
    module name or a line of code (``[sys.executable, "-m", "torchgrow"]``,
    ``"-c", "import torchgrow"``) counts as what it would import.
    """
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            if re.fullmatch(r"[A-Za-z_][\w.]*", text):
                out.update({text, f"{text}.__main__"})
            elif "import" in text:
                try:
                    out |= _imports(ast.parse(text), package, strings=True)
                except SyntaxError:
                    pass
    return out


@functools.lru_cache(maxsize=1024)
def _module_imports(text: str, package: str) -> frozenset[str]:
    return frozenset(_imports(ast.parse(text), package))


def reachable(src: Path, sources: list[str], top: str = "torchgrow") -> list[Path]:
    """The modules of package ``top`` under ``src`` that code in ``sources`` can import, transitively.

    Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` too, so parents count.
    A module no import can reach cannot change a result, whatever it does. (The safe
    checkpoint loader imports classes by name, but only classes a run itself saved,
    whose modules it had imported already.)
    """
    todo = [
        m
        for s in sources
        for m in _imports(ast.parse(s), top, strings=True)
        if m.split(".")[0] == top
    ]
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            path = _module_file(src, mod)
            if mod in seen or path is None:
                continue
            seen[mod] = path
            package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
            todo += [
                m for m in _module_imports(path.read_text(), package) if m.split(".")[0] == top
            ]
    return sorted(set(seen.values()))
