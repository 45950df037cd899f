"""Printed reports of training runs (rich tables; plain text when not a terminal):
:func:`events_table` (the growth events of a run), :func:`history_table` (per-epoch metrics),
:func:`comparison_table` (several runs side by side) and :func:`print_run_summary`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from ..grower import GrowthEvent
from ..train import History

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
