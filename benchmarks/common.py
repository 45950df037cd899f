"""Shared helpers of the benchmark scripts: environment facts and writing results."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """Facts that a reader needs to compare numbers across machines."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
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


def write_results(name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` to :func:`results_dir`; return both paths.

    A payload with ``"quick": True`` goes to ``results/quick/``, so that smoke
    runs never overwrite the committed results.
    """
    out = results_dir(bool(payload.get("quick")))
    payload = {"benchmark": name, "command": "python -m benchmarks." + name, **payload}
    payload.setdefault("environment", environment())
    js = out / f"{name}.json"
    md = out / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    env = payload["environment"]
    header = (
        f"# {name}\n\nMade by `python -m benchmarks.{name}` "
        f"(torch {env['torch']}, {env['cpu_count']} CPU cores, {env['torch_threads']} threads, "
        f"{env['date']}).\n\n"
    )
    md.write_text(header + markdown)
    print(markdown, file=sys.stdout)
    return js, md
