"""The ``torchgrow`` command.

``torchgrow run``
    Train one model on one offline data set with one growth method (or none)
    and print a report; ``--out DIR`` also writes ``metrics.csv``,
    ``events.jsonl``, ``summary.json`` (and checkpoints).
``torchgrow demo``
    A real growth run on MNIST-1D in about a minute on two CPU cores: a small
    MLP grown with random zero-fan-in units, compared with the same small
    network and with a network of the grown size, both trained statically.

Growth methods are looked up in :data:`METHODS`; :func:`register_method` adds
one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

import torch

from .. import distributed
from .compare import _cmd_compare, _cmd_report
from .demo import _cmd_demo
from .methods import METHODS, Method, register_method
from .parser import build_parser
from .run import _cmd_run

__all__ = ["METHODS", "Method", "register_method", "build_parser", "main"]


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchgrow`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (argument errors exit through ``SystemExit(2)``).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "nproc", 1) > 1 and "LOCAL_RANK" not in os.environ:
        if args.command == "compare" and args.backend == "ray":
            parser.error("--nproc and --backend ray do not mix: Ray runs its own workers")
        return _launch(argv, args.nproc)
    if "LOCAL_RANK" in os.environ and args.command in ("run", "compare"):
        return _as_rank(lambda: _dispatch(parser, args), args)
    return _dispatch(parser, args)


def _launch(argv: list[str], nproc: int) -> int:
    """Re-run this command under torchrun with ``nproc`` processes; its exit status."""
    rest, skip = [], False
    for a in argv:  # drop --nproc N (torchrun's workers must not relaunch)
        if skip or a == "--nproc":
            skip = not skip
            continue
        if not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "torchgrow", *rest]
    return subprocess.call(cmd)


def _as_rank(body: Callable[[], int], args: argparse.Namespace) -> int:
    """Run ``body`` as one rank of a torchrun job: process group up, output on rank 0 only."""
    import torch.distributed as dist

    device = getattr(args, "device", "cpu")
    backend = "nccl" if str(device).startswith("cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
    dist.init_process_group(backend)
    try:
        if dist.get_rank() != 0:
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                return body()
        return body()
    finally:
        distributed.shutdown()


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "run":
        return _cmd_run(args, args.subparser)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "compare":
        return _cmd_compare(args, args.subparser)
    if args.command == "report":
        return _cmd_report(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse checks
    return 2
