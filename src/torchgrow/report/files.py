"""The report of a ``torchgrow compare`` directory on disk: ``report.md``, a self-contained
``report.html`` and the plots of :mod:`torchgrow.plots` (:func:`write_report`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .comparison import load_comparison, summarise_comparison
from .console import format_count

__all__ = ["write_report", "comparison_markdown", "comparison_html", "PLOTS"]

PLOTS = (
    ("accuracy_vs_flops.png", "Validation accuracy against training FLOPs spent"),
    ("parameters.png", "Parameters over training; triangles mark growth events"),
    ("pareto.png", "Final test accuracy against final parameters, with the Pareto front"),
    ("curves.png", "Validation accuracy and loss per epoch, mean over seeds (range shaded)"),
)
"""The plots of a comparison report: file name and caption."""

TIMELINE_NOTE = (
    "What grew (or was pruned or deepened), when, where and by how much, for the first seed of "
    "each method; max |Δout| is the output change the step measured (- where the method does "
    "not measure it)."
)

HOW_TO_READ = (
    "Every method ran on the same data split, epoch budget and seeds. The first four "
    "columns are each method's own description, stored in its code (`torchgrow.methods`, "
    "`torchgrow.contenders`), answering why it grows (goal, metric), when (trigger), where "
    "(which layers or units) and how (initialisation of the new parts). The measured columns: "
    "**test accuracy** on the held-out test split, mean ± sample standard deviation over "
    "seeds (every decision a method makes uses a validation split carved from the training "
    "set); **parameters** and **FLOPs/example** (2 × multiply-accumulates of a forward pass, "
    "see `torchgrow.why`) of the final network; **training FLOPs**, the compute spent "
    "training it (3 × forward FLOPs per example seen, summed as the network changed, plus "
    "any scoring passes a method makes); **wall s**, seconds of the whole run; **growth "
    "events**, structural additions (units, connections, layers or blocks; pruning and "
    "trimming are logged but not counted); **max |Δout|**, the largest change of the "
    "network's output measured at a growth event (≈ 0 for function-preserving methods, "
    "'-' where not measured). Compare accuracy at matched cost: a method that ends more "
    "accurate but larger or costlier has bought its accuracy; the Pareto plot shows which "
    "methods no other beats on both accuracy and size."
)


def _pm(pair: tuple[float, float], fmt: Any, seeds: int) -> str:
    """``mean ± std``; the mean alone for one seed or when every seed gave the same value."""
    mean, std = pair
    return fmt(mean) if seeds < 2 or std == 0 else f"{fmt(mean)} ± {fmt(std)}"


def _cells(row: Mapping[str, Any]) -> list[str]:
    """The formatted cells of one method's row (shared by Markdown and HTML)."""
    d, n = row["description"], row["seeds"]
    delta = row["max_abs_delta"]
    return [
        d.get("name", row["method"]),
        d.get("why", "-"),
        d.get("when", "-"),
        d.get("where", "-"),
        d.get("how", "-"),
        _pm(row["test_accuracy"], lambda x: f"{100 * x:.2f}", n),
        *(
            [_pm(row["test_bits_per_char"], lambda x: f"{x:.3f}", n)]
            if "test_bits_per_char" in row
            else []
        ),
        _pm(row["parameters"], lambda x: f"{x:,.0f}", n),
        _pm(row["flops_per_example"], lambda x: format_count(round(x)), n),
        _pm(row["training_flops"], lambda x: format_count(round(x)), n),
        _pm(row["wall_seconds"], lambda x: f"{x:.1f}", n),
        _pm(row["growth_events"], lambda x: f"{x:.3g}", n),
        "-" if delta is None else f"{delta:.1e}",
    ]


TABLE_HEADER = (
    "Method",
    "Why",
    "When",
    "Where",
    "How",
    "Test acc. %",
    "Parameters",
    "FLOPs/example",
    "Training FLOPs",
    "Wall s",
    "Growth events",
    "max |Δout|",
)

RUNS_HEADER = (
    "Method",
    "Seed",
    "Model",
    "Test acc. %",
    "Parameters",
    "FLOPs/example",
    "Training FLOPs",
    "Wall s",
    "Growth events",
    "max |Δout|",
)


def _header(comparison: Mapping[str, Any], base: Sequence[str]) -> list[str]:
    """A table's header; a language-model comparison scores next characters, in bits too."""
    if comparison["config"].get("model", "mlp") != "gpt":
        return list(base)
    out = []
    for h in base:
        out += ["Test next-char acc. %", "Test bits/char"] if h == "Test acc. %" else [h]
    return out


def _run_cells(method: str, run: Mapping[str, Any]) -> list[str]:
    r = run["result"]
    delta = r["max_abs_delta"]
    return [
        method,
        str(run["seed"]),
        r["model"],
        f"{100 * r['test_accuracy']:.2f}",
        *(
            [f"{r['extra']['test_bits_per_char']:.3f}"]
            if r.get("extra", {}).get("test_bits_per_char") is not None
            else []
        ),
        str(r["parameters"]),
        str(r["flops_per_example"]),
        str(r["training_flops"]),
        f"{r['wall_seconds']:.1f}",
        str(r["growth_events"]),
        "-" if delta is None else f"{delta:.1e}",
    ]


def _settings_line(comparison: Mapping[str, Any]) -> str:
    c = comparison["config"]
    gpt = c.get("model", "mlp") == "gpt"
    parts = [
        f"data `{c['data']}`",
        f"budget {c['budget_epochs']} epochs",
        f"seeds {', '.join(map(str, c['seeds']))}",
        f"target d_model {round(c['width'] * c['grow_factor'])}, context 64"
        if gpt
        else f"start width {c['width']}",
        f"AdamW peak lr {c['lr']}, batch {c['batch_size']} sequences"
        if gpt
        else f"SGD lr {c['lr']}, batch {c['batch_size']}",
    ]
    return "; ".join(parts)


def _manifest_line(comparison: Mapping[str, Any]) -> str:
    m = comparison["manifest"]
    keys = ("torchgrow", "torch", "python", "numpy", "platform", "cpu_count", "date")
    return ", ".join(f"{k} {m[k]}" for k in keys if k in m)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


TIMELINE_HEADER = ("Method", "Seed", "Epoch", "Kind", "What", "Parameters after", "max |Δout|")


def growth_timeline(comparison: Mapping[str, Any]) -> list[list[str]]:
    """Every structural change of each method's first seed, in order: one table row each
    (method, seed, epoch, kind, what changed where and by how much, parameters after, max
    |Δout|); the other seeds' are in their runs' ``events.jsonl``."""
    rows = []
    for method, entry in comparison["methods"].items():
        run = min(entry["runs"], key=lambda r: r["seed"])
        name = entry["description"].get("name", method)
        for e in run["events"]:
            delta = e.get("max_abs_delta")
            rows.append(
                [
                    name,
                    str(run["seed"]),
                    str(e["epoch"]),
                    e["kind"],
                    e.get("detail", ""),
                    format_count(e.get("parameters_after")),
                    "-" if delta is None else f"{delta:.1e}",
                ]
            )
    return rows


def comparison_markdown(comparison: Mapping[str, Any], *, plots: bool = True) -> str:
    """The Markdown report of a comparison.

    Parameters
    ----------
    comparison : mapping
        From :func:`load_comparison`.
    plots : bool
        Link the PNGs of :data:`PLOTS` (written beside the report).

    Returns
    -------
    str
        The report.
    """
    c = comparison["config"]
    title = c.get("name") or "comparison"
    lines = [f"# torchgrow compare: {title}", "", _settings_line(comparison) + ".", ""]
    if comparison["manifest"].get("command"):
        lines += [f"Made by `{comparison['manifest']['command']}`.", ""]
    lines += ["## How to read this report", "", HOW_TO_READ, "", "## Methods", ""]
    header = _header(comparison, TABLE_HEADER)
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in summarise_comparison(comparison):
        lines.append("| " + " | ".join(_md_escape(x) for x in _cells(row)) + " |")
    if comparison["missing"]:
        missing = ", ".join(f"{m} seed {s}" for m, s in comparison["missing"])
        lines += ["", f"**Not finished (not in the table):** {missing}."]
    if plots:
        lines += ["", "## Plots", ""]
        for name, caption in PLOTS:
            lines += [f"![{caption}]({name})", "", f"*{caption}.*", ""]
    timeline = growth_timeline(comparison)
    if timeline:
        lines += ["## Growth timeline", "", TIMELINE_NOTE, ""]
        lines.append("| " + " | ".join(_md_escape(h) for h in TIMELINE_HEADER) + " |")
        lines.append("|" + "---|" * len(TIMELINE_HEADER))
        lines += ["| " + " | ".join(_md_escape(x) for x in row) + " |" for row in timeline]
        lines.append("")
    runs_header = _header(comparison, RUNS_HEADER)
    lines += ["## Runs", "", "| " + " | ".join(_md_escape(h) for h in runs_header) + " |"]
    lines.append("|" + "---|" * len(runs_header))
    for method, entry in comparison["methods"].items():
        for run in entry["runs"]:
            lines.append("| " + " | ".join(_md_escape(x) for x in _run_cells(method, run)) + " |")
    lines += ["", f"Versions: {_manifest_line(comparison)}.", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; white-space: nowrap; }
figure { display: inline-block; margin: 0.5em; }
figcaption { font-size: 0.85em; color: #555; }
p.note { max-width: 70em; }
"""

_SCRIPT = """
var torchgrowErrors = 0;
window.addEventListener("error", function () { torchgrowErrors += 1; });
window.addEventListener("load", function () {
  var ok = 0;
  document.querySelectorAll("img").forEach(function (im) {
    if (im.complete && im.naturalWidth > 0) { ok += 1; }
  });
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.errors = String(torchgrowErrors);
});
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [
            f'<td class="num">{html.escape(x)}</td>'
            if i >= numeric_from
            else f"<td>{html.escape(x)}</td>"
            for i, x in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def comparison_html(comparison: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The self-contained HTML report: inline CSS, PNGs embedded as data URIs, no network.

    Parameters
    ----------
    comparison : mapping
        From :func:`load_comparison`.
    images : mapping of str to bytes
        PNG file name (see :data:`PLOTS`) -> its bytes.

    Returns
    -------
    str
        The HTML document. When loaded, its ``<body>`` gets
        ``data-images-loaded`` (how many images decoded) and ``data-errors``
        (script errors seen), so a headless browser can check it.
    """
    c = comparison["config"]
    title = html.escape(f"torchgrow compare: {c.get('name') or 'comparison'}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head><body>",
        f"<h1>{title}</h1>",
        f"<p>{html.escape(_settings_line(comparison).replace('`', ''))}.</p>",
    ]
    if comparison["manifest"].get("command"):
        parts.append(
            f"<p>Made by <code>{html.escape(comparison['manifest']['command'])}</code>.</p>"
        )
    parts += [
        "<h2>How to read this report</h2>",
        f'<p class="note">{html.escape(HOW_TO_READ.replace("**", "").replace("`", ""))}</p>',
        "<h2>Methods</h2>",
        _html_table(
            _header(comparison, TABLE_HEADER),
            [_cells(r) for r in summarise_comparison(comparison)],
            5,
        ),
    ]
    if comparison["missing"]:
        missing = ", ".join(f"{m} seed {s}" for m, s in comparison["missing"])
        parts.append(
            f"<p><strong>Not finished (not in the table):</strong> {html.escape(missing)}.</p>"
        )
    parts.append("<h2>Plots</h2>")
    for name, caption in PLOTS:
        if name in images:
            data = base64.b64encode(images[name]).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}.</figcaption></figure>"
            )
    timeline = growth_timeline(comparison)
    if timeline:
        parts += [
            "<h2>Growth timeline</h2>",
            f'<p class="note">{html.escape(TIMELINE_NOTE)}</p>',
            _html_table(TIMELINE_HEADER, timeline, 5),
        ]
    runs = [
        _run_cells(method, run)
        for method, entry in comparison["methods"].items()
        for run in entry["runs"]
    ]
    parts += [
        "<h2>Runs</h2>",
        _html_table(_header(comparison, RUNS_HEADER), runs, 3),
        f"<p>Versions: {html.escape(_manifest_line(comparison))}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(out: str | Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and the plots of a comparison directory.

    Parameters
    ----------
    out : str or Path
        A directory written by ``torchgrow compare``.

    Returns
    -------
    (Path, Path)
        The Markdown and HTML reports.

    Raises
    ------
    FileNotFoundError
        If ``out`` holds no comparison or no finished run.
    """
    from .. import plots

    out = Path(out)
    comparison = load_comparison(out)
    makers = (
        plots.plot_accuracy_vs_flops,
        plots.plot_parameters,
        plots.plot_pareto,
        plots.plot_curves,
    )
    images = {}
    for (name, _), make in zip(PLOTS, makers, strict=True):
        make(comparison, out / name)
        images[name] = (out / name).read_bytes()
    md, page = out / "report.md", out / "report.html"
    md.write_text(comparison_markdown(comparison))
    page.write_text(comparison_html(comparison, images))
    return md, page


__all__ += [
    "growth_timeline",
    "load_comparison",
    "summarise_comparison",
    "comparison_markdown",
    "comparison_html",
    "write_report",
]
