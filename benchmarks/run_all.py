"""Run every benchmark (``make bench``); each writes JSON + Markdown under benchmarks/results/."""

from __future__ import annotations

import argparse
import importlib
import time

BENCHMARKS = [
    "overhead",
    "gradmax_student_teacher",
    "gradmax_images",
    "gradmax_alive",
    "nest_lenet",
    "nest_study",
    "autogrow_depth",
    "compnet_deepen",
    "ddp_growth",
    "compare_fashion_mnist",
    "graph_coverage",
    "growth_cost",
    "transformer_growth",
    "fsdp_growth",
]
# Written, run in the test suite's quick mode, but without a committed full result yet:
# `run_all` runs them when named; they join BENCHMARKS with their first result.
PENDING: list[str] = []


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*", help=f"subset of {BENCHMARKS}")
    ap.add_argument("--quick", action="store_true", help="smoke-test settings")
    args = ap.parse_args(argv)
    for name in args.names or BENCHMARKS:
        if name not in BENCHMARKS + PENDING:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {BENCHMARKS + PENDING}")
        t0 = time.perf_counter()
        print(f"== {name}")
        importlib.import_module(f"benchmarks.{name}").main(["--quick"] if args.quick else [])
        print(f"== {name}: {time.perf_counter() - t0:.0f} s")
    if not args.quick:
        from benchmarks import render

        render.main([])  # the README's and docs' tables from the new results


if __name__ == "__main__":
    main()
