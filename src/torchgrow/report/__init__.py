"""Reports of training runs and comparisons.

On the console (:mod:`torchgrow.report.console`): :func:`events_table` (the growth events of a
run), :func:`history_table` (per-epoch metrics), :func:`comparison_table` (several runs side by
side) and :func:`print_run_summary`. On disk, for a ``torchgrow compare`` directory
(:mod:`torchgrow.report.files`): :func:`write_report` writes ``report.md``, a self-contained
``report.html`` and the plots of :mod:`torchgrow.plots`, from :func:`load_comparison` and
:func:`summarise_comparison` (:mod:`torchgrow.report.comparison`).
"""

from __future__ import annotations

from .comparison import SUMMARY_KEYS, load_comparison, summarise_comparison
from .console import (
    comparison_table,
    events_table,
    format_count,
    history_table,
    make_console,
    print_run_summary,
)
from .files import (
    PLOTS,
    RUNS_HEADER,
    TABLE_HEADER,
    TIMELINE_HEADER,
    comparison_html,
    comparison_markdown,
    write_report,
)

__all__ = [
    "make_console",
    "format_count",
    "events_table",
    "history_table",
    "comparison_table",
    "print_run_summary",
    "load_comparison",
    "summarise_comparison",
    "SUMMARY_KEYS",
    "write_report",
    "comparison_markdown",
    "comparison_html",
    "PLOTS",
    "RUNS_HEADER",
    "TABLE_HEADER",
    "TIMELINE_HEADER",
]
