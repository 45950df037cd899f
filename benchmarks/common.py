"""Shared helpers of the benchmark scripts: the stamp every result carries, and writing results.

Every results JSON holds one ``meta`` object (:func:`meta`): the git commit it
was made at and whether the tree differed from it, the exact command, the
torch version, the thread count, the date and the machine. The README's and
the docs' tables are copied from the ``tables`` a result stores
(``python -m benchmarks.render``), so a table cannot drift from its result.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Files the results are rendered into: changing them does not change a number.
RENDERED = ("benchmarks/results", "README.md", "docs")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def meta(name: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """The stamp of a result made now by ``python -m benchmarks.<name> <argv>``.

    ``dirty`` is true when tracked or new files outside the rendered ones
    (results, README, docs) differ from ``commit``: then the numbers were not
    made by the code of that commit alone.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    status = _git("status", "--porcelain", "--", ".", *(f":(exclude){p}" for p in RENDERED))
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "command": shlex.join(["python", "-m", f"benchmarks.{name}", *argv]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
    }


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (floats with 4 significant digits)."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def results_dir(quick: bool = False) -> Path:
    """Where results go: ``results/``, or the git-ignored ``results/quick/`` for smoke runs."""
    path = RESULTS / "quick" if quick else RESULTS
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_results(
    name: str,
    payload: dict[str, Any],
    markdown: str,
    *,
    argv: Sequence[str] | None = None,
    tables: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` to :func:`results_dir`; return both paths.

    Parameters
    ----------
    name : str
        The benchmark's module name.
    payload : dict
        The results; ``"quick": True`` sends them to ``results/quick/``, so
        smoke runs never overwrite the committed results; ``"threads"`` is the
        torch thread count the measurements ran with, when the benchmark set
        one of its own.
    markdown : str
        The report's body.
    argv : sequence of str, optional
        The arguments the benchmark ran with (default ``sys.argv[1:]``).
    tables : dict, optional
        Named Markdown fragments that README.md and docs/ quote
        (``<!-- result: <name>.<key> -->`` markers; ``benchmarks.render``).
    """
    out = results_dir(bool(payload.get("quick")))
    stamp = meta(name, argv)
    if "threads" in payload:  # the benchmark ran its measurements with a thread count of its own
        stamp["threads"] = payload["threads"]
    payload = {"benchmark": name, "meta": stamp, **payload, "tables": dict(tables or {})}
    js = out / f"{name}.json"
    md = out / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    header = (
        f"# {name}\n\nMade by `{stamp['command']}` at commit "
        f"`{(stamp['commit'] or 'unknown')[:10]}`{' (with local changes)' if stamp['dirty'] else ''}"
        f" (torch {stamp['torch']}, {stamp['machine']['cpu_count']} CPU cores, "
        f"{stamp['threads']} threads, {stamp['date'][:10]}).\n\n"
    )
    md.write_text(header + markdown)
    print(markdown, file=sys.stdout)
    return js, md
