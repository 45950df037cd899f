"""Compare growth methods side by side, then read the report.

``torchgrow compare`` (here through its Python API) runs several methods on the same data, the
same budget of epochs and the same seeds, from the same starting width, logs every run, and
writes a report (Markdown and HTML, with plots) that puts each method's answers to the four
questions next to what it measured: accuracy, parameters, training FLOPs. A method that ends
more accurate but larger, or after more training FLOPs, has bought its accuracy.

    python tutorials/compare_methods.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from torchgrow.compare import CompareConfig, load_results, run_compare  # noqa: E402
from torchgrow.report import write_report  # noqa: E402


def run(quick: bool) -> dict:
    cfg = CompareConfig(
        name="tutorial",
        data="digits",
        methods=("static", "random", "gradmax", "nest") if quick else None,
        seeds=(0,) if quick else (0, 1, 2),
        budget_epochs=3 if quick else 10,
        width=16,
        batch_size=32,
        train_size=600 if quick else None,
        test_size=200 if quick else None,
        threads=1,
    )
    out = Path(tempfile.mkdtemp(prefix="torchgrow-compare-"))
    run_compare(cfg, out, progress=False)
    md, html = write_report(out)  # `torchgrow report OUT` does the same
    results = load_results(out)
    table = [line for line in md.read_text().splitlines() if line.startswith("|")]
    print("\n".join(table[: 2 + len(cfg.methods)]))  # the report's first table: one row per method
    print(f"\nfull report: {md} and {html}")
    return {
        "methods": sorted({r["method"] for r in results}),
        "test_accuracy": {r["method"]: r["test_accuracy"] for r in results},
        "parameters": {r["method"]: r["parameters"] for r in results},
        "report_md": md.read_text(),
        "report_html_bytes": html.stat().st_size,
    }


if __name__ == "__main__":
    _common.main(run, __doc__)
