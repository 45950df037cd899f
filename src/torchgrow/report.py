"""Printed reports of training runs (rich tables; plain text when not a terminal).

On the console: :func:`events_table` (the growth events of a run),
:func:`history_table` (per-epoch metrics), :func:`comparison_table` (several
runs side by side) and :func:`print_run_summary`. On disk, for a
``torchgrow compare`` directory: :func:`write_report` writes ``report.md``,
a self-contained ``report.html`` and the plots of :mod:`torchgrow.plots`,
from :func:`load_comparison` and :func:`summarise_comparison`.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from .grower import GrowthEvent
from .train import History

__all__ = [
    "make_console",
    "format_count",
    "events_table",
    "history_table",
    "comparison_table",
    "print_run_summary",
]


def make_console(file: IO[str] | None = None, *, width: int = 120) -> Console:
    """A rich console; at least ``width`` columns wide when not writing to a terminal.

    Parameters
    ----------
    file : file object, optional
        Where to write (default ``sys.stdout``, looked up at each write).
    width : int
        Width used when the output is not a terminal (pipes, files, captured
        output), so that tables are not squeezed to 80 columns.

    Returns
    -------
    Console
        The console.
    """
    console = Console(file=file, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, width)
    return console


def _utf(console: Console | None) -> bool:
    encoding = (console.encoding if console is not None else "utf-8") or ""
    return encoding.lower().replace("-", "").startswith("utf")


def _arrow(console: Console | None) -> str:
    return "→" if _utf(console) else "->"


def format_count(n: float | None, *, unit: str = "") -> str:
    """``1234567`` -> ``"1.23M"``; small numbers keep their digits; ``None`` -> ``"-"``.

    Parameters
    ----------
    n : float or None
        The number.
    unit : str
        Appended after the SI prefix (e.g. ``"FLOPs"``).

    Returns
    -------
    str
        The formatted number.
    """
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{prefix}{(' ' + unit) if unit else ''}"
    text = f"{int(n):,}" if float(n).is_integer() else f"{n:.3g}"
    return f"{text}{(' ' + unit) if unit else ''}"


def _fmt_float(x: float | None, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def events_table(
    events: Sequence[GrowthEvent],
    *,
    title: str | None = "Growth events",
    max_rows: int = 30,
    console: Console | None = None,
) -> Table:
    """One row per grown unit: when, where, how, how many, and what it did to the output.

    Parameters
    ----------
    events : sequence of GrowthEvent
        The events (e.g. ``history.events`` or ``grower.events``).
    title : str, optional
        Table title.
    max_rows : int
        Show at most this many events (the first ``max_rows - 1`` and the
        last one, with a marker row in between).
    console : Console, optional
        The console it will print on (chooses Unicode or ASCII arrows).

    Returns
    -------
    Table
        Columns: step, layer, how, units added, width before -> after,
        parameters before -> after, max |delta output| (on the growth batch)
        and the gradient norms of the new fan-in / fan-out.
    """
    arrow = _arrow(console)
    delta = "Δ" if _utf(console) else "d"
    hows = {e.how for e in events}
    same_how = len(hows) == 1
    if same_how and title is not None:
        title = f"{title} (how: {next(iter(hows))})"
    table = Table(title=title, title_justify="left")
    table.add_column("step", justify="right")
    table.add_column("layer")
    if not same_how:
        table.add_column("how")
    table.add_column("+units", justify="right")
    table.add_column("width", justify="right")
    table.add_column("parameters", justify="right")
    table.add_column(f"max |{delta} output|", justify="right")
    table.add_column("|grad| new fan-in / fan-out", justify="right")
    shown: list[GrowthEvent | None] = list(events)
    if len(events) > max_rows > 1:
        shown = [*events[: max_rows - 1], None, events[-1]]
    for e in shown:
        if e is None:
            hidden = len(events) - max_rows
            cells = ["...", f"({hidden} more)"] + [""] * (len(table.columns) - 2)
            table.add_row(*cells)
            continue
        cells = [str(e.step), e.unit] + ([] if same_how else [e.how])
        cells += [
            f"+{e.units_added}",
            f"{e.width_before} {arrow} {e.width_after}",
            f"{e.params_before:,} {arrow} {e.params_after:,}",
            _fmt_float(e.max_abs_delta, ".2e"),
            f"{_fmt_float(e.grad_norm_fan_in, '.2e')} / {_fmt_float(e.grad_norm_fan_out, '.2e')}",
        ]
        table.add_row(*cells)
    return table


def history_table(history: History, *, title: str | None = "Epochs", max_rows: int = 12) -> Table:
    """Per-epoch metrics (the last ``max_rows`` epochs).

    Parameters
    ----------
    history : History
        The run.
    title : str, optional
        Table title.
    max_rows : int
        Epochs shown (the last ones, plus the first).

    Returns
    -------
    Table
        Columns: epoch, step, train loss, test loss, test accuracy,
        parameters, training FLOPs, seconds, units grown.
    """
    table = Table(title=title, title_justify="left")
    for name in ("epoch", "step", "train loss", "test loss", "test acc", "parameters"):
        table.add_column(name, justify="right")
    for name in ("training FLOPs", "seconds", "grown"):
        table.add_column(name, justify="right")
    rows = history.rows
    if len(rows) > max_rows > 1:
        rows = [rows[0], *rows[-(max_rows - 1) :]]
    prev_epoch = 0
    for r in rows:
        if r["epoch"] > prev_epoch + 1:
            table.add_row("...", "", "", "", "", "", "", "", "")
        prev_epoch = r["epoch"]
        table.add_row(
            str(r["epoch"]),
            str(r["step"]),
            _fmt_float(r["train_loss"]),
            _fmt_float(r["val_loss"]),
            _fmt_pct(r["val_accuracy"]),
            f"{r['parameters']:,}",
            format_count(r["training_flops"]),
            f"{r['seconds']:.1f}",
            f"+{r['units_added']}" if r.get("units_added") else "",
        )
    return table


def comparison_table(
    runs: Mapping[str, History], *, title: str | None = "Comparison", console: Console | None = None
) -> Table:
    """Several runs side by side: final and best test accuracy, cost, time.

    Parameters
    ----------
    runs : mapping of str to History
        Run name -> its history.
    title : str, optional
        Table title.
    console : Console, optional
        The console it will print on (chooses Unicode or ASCII arrows).

    Returns
    -------
    Table
        One row per run: final and best test accuracy, final test loss,
        parameters (initial -> final), units grown, training FLOPs, optimizer
        steps and seconds.
    """
    arrow = _arrow(console)
    table = Table(title=title, title_justify="left")
    table.add_column("run")
    for name in ("test acc", "best acc", "test loss", "parameters"):
        table.add_column(name, justify="right")
    for name in ("grown", "train FLOPs", "steps", "seconds"):
        table.add_column(name, justify="right")
    for name, h in runs.items():
        if not h.rows:
            table.add_row(name, *["-"] * 8)
            continue
        last = h.rows[-1]
        accs = [a for a in h.column("val_accuracy") if a is not None]
        p0 = h.initial_parameters
        params = (
            f"{p0:,} {arrow} {last['parameters']:,}"
            if p0 != last["parameters"]
            else f"{last['parameters']:,}"
        )
        table.add_row(
            name,
            _fmt_pct(last["val_accuracy"]),
            _fmt_pct(max(accs) if accs else None),
            _fmt_float(last["val_loss"]),
            params,
            str(sum(e.units_added for e in h.events)),
            format_count(last["training_flops"]),
            str(last["step"]),
            f"{last['seconds']:.1f}",
        )
    return table


def print_run_summary(
    history: History,
    *,
    title: str | None = None,
    grower: Any = None,
    console: Console | None = None,
    show_epochs: bool = True,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Print a run: settings, growth policy, epochs, growth events and the final result.

    Parameters
    ----------
    history : History
        The run.
    title : str, optional
        A heading.
    grower : Grower, optional
        Its :meth:`~torchgrow.Grower.describe` is printed (default: ``history.grower``).
    console : Console, optional
        Where to print (default :func:`make_console`).
    show_epochs : bool
        Include the per-epoch table.
    settings : mapping, optional
        Extra ``name: value`` lines printed under the title (data, model...).
    """
    console = console or make_console()
    grower = grower if grower is not None else history.grower
    if title:
        console.rule(title)
    for key, value in (settings or {}).items():
        console.print(f"{key}: {value}")
    if grower is not None:
        for key, value in grower.describe().items():
            console.print(f"{key}: {value}")
    else:
        console.print("growth: none (static network)")
    if show_epochs and history.rows:
        console.print(history_table(history))
    if history.events:
        console.print(events_table(history.events, console=console))
    last = history.last
    if last is None:
        console.print("no epoch completed")
        return
    arrow = _arrow(console)
    p0 = history.initial_parameters
    console.print(
        f"final: test accuracy {_fmt_pct(last['val_accuracy'])}, test loss "
        f"{_fmt_float(last['val_loss'])}, parameters {p0:,} {arrow} {last['parameters']:,}, "
        f"{len(history.events)} growth event(s), training {format_count(last['training_flops'])} "
        f"FLOPs, {last['seconds']:.1f} s"
    )


# ------------------------------------------------------------------ comparison reports
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


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return [
            {
                k: (None if v == "" else float(v) if "." in v or "e" in v else int(v))
                for k, v in r.items()
            }
            for r in csv.DictReader(fh)
        ]


def load_comparison(out: str | Path) -> dict[str, Any]:
    """Everything a ``torchgrow compare`` directory holds, grouped by method.

    Parameters
    ----------
    out : str or Path
        The comparison's directory.

    Returns
    -------
    dict
        ``config`` (the settings), ``manifest`` (versions, command, date),
        ``methods`` (method -> ``description`` and ``runs``, each run with its
        ``seed``, ``result`` (``result.json``), ``metrics`` (``metrics.csv``
        rows) and ``events`` (``events.jsonl``)), ``missing`` (``(method,
        seed)`` runs not finished) and ``growth_kinds``.

    Raises
    ------
    FileNotFoundError
        If ``out`` holds no comparison or no finished run.
    """
    from .compare import GROWTH_KINDS, CompareConfig, run_dir

    out = Path(out)
    if not (out / "config.toml").exists():
        raise FileNotFoundError(
            f"{out} is not a comparison directory (no config.toml): run `torchgrow compare "
            f"--out {out}` first"
        )
    cfg = CompareConfig.from_toml(out / "config.toml")
    man_path = out / "manifest.json"
    comparison: dict[str, Any] = {
        "config": cfg.to_dict(),
        "manifest": json.loads(man_path.read_text()) if man_path.exists() else {},
        "methods": {},
        "missing": [],
        "growth_kinds": GROWTH_KINDS,
    }
    for method in cfg.methods:
        for seed in cfg.seeds:
            path = run_dir(out, method, seed)
            if not (path / "result.json").exists():
                comparison["missing"].append((method, seed))
                continue
            result = json.loads((path / "result.json").read_text())
            events = [
                json.loads(line)
                for line in (path / "events.jsonl").read_text().splitlines()
                if line.strip()
            ]
            entry = comparison["methods"].setdefault(
                method, {"description": result["description"], "runs": []}
            )
            entry["runs"].append(
                {
                    "seed": seed,
                    "result": result,
                    "metrics": _read_metrics(path / "metrics.csv"),
                    "events": events,
                }
            )
    if not comparison["methods"]:
        raise FileNotFoundError(
            f"{out} holds no finished run: run `torchgrow compare --config {out / 'config.toml'}`"
        )
    return comparison


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


SUMMARY_KEYS = (
    "test_accuracy",
    "parameters",
    "flops_per_example",
    "training_flops",
    "wall_seconds",
    "growth_events",
)
"""The per-run numbers averaged over seeds in a comparison report."""


def summarise_comparison(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per method: its description and the mean and std over seeds of each measure.

    Parameters
    ----------
    comparison : mapping
        From :func:`load_comparison`.

    Returns
    -------
    list of dict
        ``method``, ``description``, ``seeds`` (how many finished), for each
        key of :data:`SUMMARY_KEYS` a ``(mean, std)`` pair (sample std, 0 for
        one seed), and ``max_abs_delta``, the largest over seeds (``None`` if
        never measured).
    """
    rows = []
    for method, entry in comparison["methods"].items():
        results = [r["result"] for r in entry["runs"]]
        row: dict[str, Any] = {
            "method": method,
            "description": entry["description"],
            "seeds": len(results),
        }
        for key in SUMMARY_KEYS:
            row[key] = _mean_std([float(r[key]) for r in results])
        deltas = [r["max_abs_delta"] for r in results if r["max_abs_delta"] is not None]
        row["max_abs_delta"] = max(deltas) if deltas else None
        bpc = [r.get("extra", {}).get("test_bits_per_char") for r in results]
        if all(b is not None for b in bpc):  # language models (the gpt family)
            row["test_bits_per_char"] = _mean_std([float(b) for b in bpc])
        rows.append(row)
    return rows


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
    from . import plots

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
