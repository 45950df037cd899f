"""``torchgrow compare`` and ``torchgrow report``: methods side by side, and their report."""

from __future__ import annotations

import argparse
import sys

from .. import distributed
from ..report import make_console

__all__ = []


# --------------------------------------------------------------------------- compare, report
def _cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..compare import CompareConfig, parse_budget, run_compare
    from ..errors import GrowthInputError

    try:
        values = CompareConfig.from_toml(args.config).to_dict() if args.config else {}
        flags = {
            "name": args.name,
            "model": args.model,
            "data": args.data,
            "methods": args.methods,
            "seeds": None if args.seeds is None else list(range(args.seeds)),
            "budget_epochs": None if args.budget is None else parse_budget(args.budget),
            "width": args.width,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "train_size": args.train_size,
            "test_size": args.test_size,
            "threads": args.threads,
            "epoch_tokens": args.epoch_tokens,
            "fsdp": args.fsdp,
        }
        values.update({k: v for k, v in flags.items() if v is not None})
        cfg = CompareConfig.from_dict(values)
    except (GrowthInputError, FileNotFoundError) as exc:
        parser.error(str(exc))
    out = args.out
    if out is None:
        if args.config is None:
            parser.error("give --out DIR (where the runs and the report go)")
        out = args.config.parent
    console = make_console()
    try:
        results = run_compare(
            cfg,
            out,
            progress=args.progress,
            tensorboard=args.tensorboard,
            backend=args.backend,
            address=args.address,
        )
    except GrowthInputError as exc:
        parser.error(str(exc))
    except FileNotFoundError as exc:
        print(f"torchgrow compare: {exc}", file=sys.stderr)
        return 2
    console.print(f"{len(results)} runs finished in {out}")
    if distributed.rank() != 0:
        return 0
    return _cmd_report(argparse.Namespace(out=out))


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    try:
        md, html = write_report(args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"torchgrow report: {exc}", file=sys.stderr)
        return 2
    console = make_console()
    console.print(md.read_text(), markup=False, highlight=False)
    console.print(f"report written to {md} and {html}")
    return 0
