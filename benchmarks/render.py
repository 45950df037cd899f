"""Copy the benchmark tables into README.md and docs/, or check that they are there as made.

A Markdown file quotes a result between two markers::

    <!-- result: overhead.training_step -->
    | model | ... |
    <!-- /result -->

``overhead.training_step`` names ``benchmarks/results/overhead.json`` and the key
``training_step`` of its ``tables``. On one line the quote is inline (a sentence
with numbers in it). ``python -m benchmarks.render`` rewrites every quote from
the results; ``--check`` only reports the quotes that differ (the test suite
runs it, so a table cannot drift from its result), and ``--fresh`` also lists
the results made before a change to the code they depend on (``src/``, the
environment's pins, the benchmark's own script and the ``benchmarks`` modules it
imports) that could have changed them: the ones to re-run. A change to ``src/``
that only adds to it (new modules, new functions, new registry entries; see
:mod:`benchmarks.freshness`), or changes only functions and classes the
benchmark cannot run (:mod:`benchmarks.liveness`), leaves them fresh; so does a change to
``pyproject.toml`` or ``constraints.txt`` that installs the same base environment
(:mod:`benchmarks.environment`).
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import subprocess
from pathlib import Path

from benchmarks import environment, freshness, liveness
from benchmarks.common import RESULTS, ROOT

MARKER = re.compile(
    r"<!-- result: (?P<name>[\w]+)\.(?P<key>[\w.-]+) -->(?P<body>.*?)<!-- /result -->", re.S
)


def documents() -> list[Path]:
    """The files that may quote results: README.md and every Markdown file under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _table(name: str, key: str, cache: dict[str, dict]) -> str | None:
    if name not in cache:
        path = RESULTS / f"{name}.json"
        cache[name] = json.loads(path.read_text()) if path.exists() else {}
    return cache[name].get("tables", {}).get(key)


def _quote(body: str, table: str) -> str:
    """The text between the markers: block quotes keep the table on lines of their own."""
    if "\n" in body or "\n" in table.strip():
        return "\n" + table.strip() + "\n"
    return table.strip()


def render(check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, compare) every quote; returns the problems found."""
    problems: list[str] = []
    cache: dict[str, dict] = {}
    for doc in documents():
        text = doc.read_text()

        def replace(m: re.Match[str], doc: Path = doc) -> str:
            table = _table(m["name"], m["key"], cache)
            where = f"{doc.relative_to(ROOT)}: {m['name']}.{m['key']}"
            if table is None:
                problems.append(f"{where}: no such table in benchmarks/results/{m['name']}.json")
                return m[0]
            body = _quote(m["body"], table)
            if body != m["body"]:
                problems.append(f"{where}: differs from the result")
            return f"<!-- result: {m['name']}.{m['key']} -->{body}<!-- /result -->"

        new = MARKER.sub(replace, text)
        if not check and new != text:
            doc.write_text(new)
    return problems


def dependencies(name: str) -> list[str]:
    """The paths a result depends on: the library modules its scripts can import, the
    environment's pins and the benchmark's own script with the ``benchmarks`` modules it
    imports (transitively).

    A change to another benchmark's script, to the renderer or to the tests leaves it fresh.
    """
    seen: set[str] = set()
    todo = [name, "common"]
    while todo:
        mod = todo.pop()
        path = ROOT / "benchmarks" / f"{mod}.py"
        if mod in seen or not path.exists():
            continue
        seen.add(mod)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "benchmarks":
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmarks."):
                todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [
                    a.name.split(".")[1] for a in node.names if a.name.startswith("benchmarks.")
                ]
    scripts = [(ROOT / "benchmarks" / f"{m}.py").read_text() for m in sorted(seen)]
    library = [str(p.relative_to(ROOT)) for p in freshness.reachable(ROOT / "src", scripts)]
    return [
        *library,
        "pyproject.toml",
        "constraints.txt",
        *(f"benchmarks/{m}.py" for m in sorted(seen)),
    ]


@functools.lru_cache(maxsize=4096)
def _show(commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def _show_or_none(commit: str, path: str) -> str | None:
    try:
        return _show(commit, path)
    except subprocess.CalledProcessError:  # not there at that commit
        return None


@functools.lru_cache(maxsize=64)
def _live_at(rev: str, deps: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """Per library module, the definitions the benchmark can run at ``rev``."""
    scripts = [_show("HEAD", d) for d in deps if d.startswith("benchmarks/")]
    paths = [ROOT / d for d in deps if d.startswith("src/")]

    def read(p: Path) -> str | None:
        return _show_or_none(rev, str(p.relative_to(ROOT)))

    found = liveness.live_definitions(ROOT / "src", paths, scripts, read)
    return {str(p.relative_to(ROOT)): frozenset(n) for p, n in found.items()}


def _live(commit: str, deps: list[str]) -> dict[str, set[str]]:
    """Per library module, the definitions the benchmark can run at ``commit`` or at HEAD."""
    out: dict[str, set[str]] = {}
    for rev in (commit, "HEAD"):
        for path, names in _live_at(rev, tuple(deps)).items():
            out.setdefault(path, set()).update(names)
    return out


def _why_stale(commit: str, deps: list[str]) -> list[str]:
    """The files changed since ``commit`` in a way that could change the result, with why."""
    lines = subprocess.run(
        ["git", "diff", "--name-status", "--no-renames", commit, "HEAD", "--", *deps],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout.splitlines()  # fmt: skip
    watched = "\n".join(_show("HEAD", d) for d in deps if d.startswith("benchmarks/"))
    live = _live(commit, deps) if lines else {}
    out = []
    for line in lines:
        status, path = line.split("\t", 1)
        reason: str | None = "changed"
        if path in ("pyproject.toml", "constraints.txt") and status == "M":
            reason = environment.environment_reason(path, _show(commit, path), _show("HEAD", path))
        elif path.startswith("src/") and path.endswith(".py") and status in ("A", "M"):
            new = _show("HEAD", path)
            if status == "A":
                reason = freshness.new_module_reason(new)
            else:
                old = _show(commit, path)
                reason = freshness.change_reason(old, new, watched, live.get(path, set()))
        if reason is not None:
            out.append(f"{path} ({reason})")
    return out


def stale() -> list[str]:
    """Results made before a commit that changed the code they depend on in a way that
    could change them (:mod:`benchmarks.freshness` says which changes are only additions)."""
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        meta = json.loads(path.read_text()).get("meta", {})
        commit = meta.get("commit")
        if not commit:
            out.append(f"{path.name}: no commit stamp")
            continue
        changed = _why_stale(commit, dependencies(path.stem))
        if changed or meta.get("dirty"):
            out.append(
                f"{path.name}: made at {commit[:10]}; since then {len(changed)} of the files it"
                f" depends on changed: {'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="report differences, change nothing")
    ap.add_argument("--fresh", action="store_true", help="also list results older than the code")
    args = ap.parse_args(argv)
    problems = render(check=args.check)
    if args.fresh:
        problems += stale()
    for p in problems:
        print(p)
    if not args.check and not args.fresh:
        print("rendered the results into README.md and docs/")
        return 0
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
