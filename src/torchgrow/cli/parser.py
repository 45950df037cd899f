"""The ``torchgrow`` command line: its parser and the checks of its arguments."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import cli_fsdp, cli_user
from .. import models as tg_models
from .methods import CLI_DATASETS, METHODS

__all__ = ["build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _widths(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 40,16,10, got {text!r}"
        ) from None
    if len(values) < 2 or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected at least two positive widths (input,...,output), got {text!r}"
        )
    return values


def _add_nproc(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nproc",
        type=_positive_int,
        default=1,
        help="data-parallel processes on this machine: relaunches the command under torchrun "
        "(gloo on CPU, nccl on GPUs); for several machines run `torchrun ... -m torchgrow` "
        "yourself",
    )


def _name_or_user(names: tuple[str, ...], flag: str) -> Callable[[str], str]:
    """An argparse type: one of ``names``, or a user's ``package.module:function``."""

    def check(value: str) -> str:
        if value in names or cli_user.is_user_spec(value):
            return value
        raise argparse.ArgumentTypeError(
            f"{value!r} is not one of {', '.join(names)} nor a package.module:function"
        )

    check.__name__ = flag.lstrip("-")
    return check


def build_parser() -> argparse.ArgumentParser:
    """The ``torchgrow`` argument parser (``run``, ``demo``, ``compare``, ``report``).

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="torchgrow",
        description="Grow neural networks while they train.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,demo,compare,report}")
    sub.required = True

    methods = "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
    run = sub.add_parser(
        "run",
        help="train one model with one growth method and print a report",
        description="Train one model on an offline data set, growing it with --method.",
    )
    run.add_argument("--method", choices=list(METHODS), default="random", help=methods)
    run.add_argument(
        "--data",
        type=_name_or_user(CLI_DATASETS, "--data"),
        default="mnist1d",
        help=f"{', '.join(CLI_DATASETS)}, or your own: package.module:function returning a "
        "torchgrow Dataset or (x_train, y_train, x_test, y_test)",
    )
    run.add_argument(
        "--model",
        type=_name_or_user(tuple(tg_models.MODELS), "--model"),
        default="mlp",
        help=f"{', '.join(tg_models.MODELS)}, or your own: package.module:factory returning an "
        "nn.Module (given input_shape= and num_classes= if it takes them)",
    )
    run.add_argument(
        "--widths",
        type=_widths,
        default=None,
        help="mlp widths input,hidden...,output (default: input,16,16,classes)",
    )
    run.add_argument(
        "--width-mult", type=_positive_float, default=1.0, help="hidden width multiplier"
    )
    run.add_argument(
        "--activation",
        choices=list(tg_models.ACTIVATIONS),
        default="relu1",
        help="hidden activation (default relu1: zero-fan-in units need a slope at 0 to train)",
    )
    run.add_argument("--epochs", type=_nonneg_int, default=10, help="default 10")
    run.add_argument("--batch-size", type=_positive_int, default=64, help="default 64")
    run.add_argument("--optimizer", choices=("sgd", "adam"), default="adam", help="default adam")
    run.add_argument(
        "--lr", type=_positive_float, default=None, help="default: sgd 0.05, adam 0.003"
    )
    run.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    run.add_argument("--weight-decay", type=float, default=0.0)
    run.add_argument("--grow-every", type=_positive_int, default=200, help="steps between growths")
    run.add_argument(
        "--grow-start", type=_nonneg_int, default=0, help="first step growth may happen"
    )
    run.add_argument("--grow-times", type=_nonneg_int, default=4, help="number of growth steps")
    run.add_argument(
        "--units", type=_positive_int, default=8, help="units added per layer per growth"
    )
    run.add_argument("--seed", type=int, default=0, help="seeds the model, data order and growth")
    run.add_argument(
        "--train-size", type=_positive_int, default=None, help="use a subset of the training split"
    )
    run.add_argument(
        "--test-size", type=_positive_int, default=None, help="use a subset of the test split"
    )
    run.add_argument("--out", type=Path, default=None, help="write logs (and checkpoints) there")
    run.add_argument(
        "--checkpoint-every", type=_positive_int, default=None, help="epochs (needs --out)"
    )
    run.add_argument(
        "--resume", type=Path, default=None, help="continue from a checkpoint of an earlier run"
    )
    run.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write the curves for TensorBoard under --out (pip install torchgrow[tensorboard])",
    )
    run.add_argument("--device", default="cpu", help="torch device (default cpu)")
    run.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is fastest for small models)",
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    _add_nproc(run)
    run.add_argument(
        "--fsdp",
        action="store_true",
        help="with --nproc N: shard the model with fully_shard (FSDP2) over the N processes "
        f"instead of replicating it; methods {', '.join(cli_fsdp.FSDP_METHODS)}",
    )
    run.set_defaults(subparser=run)

    demo = sub.add_parser(
        "demo",
        help="grow a small MLP on MNIST-1D and compare it with static networks (under a minute)",
        description=(
            "A real growth run on MNIST-1D: a 40-8-8-10 MLP grown with random zero-fan-in "
            "units, against the same network and a network of the grown size trained statically."
        ),
    )
    demo.add_argument(
        "--quick", action="store_true", help="a few-seconds version (fewer data and epochs)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--epochs", type=_positive_int, default=None, help="override the number of epochs"
    )
    demo.add_argument(
        "--out", type=Path, default=None, help="write each run's logs in a sub-folder"
    )
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    demo.set_defaults(subparser=demo)
    _add_compare_parsers(sub)
    return parser


def _add_compare_parsers(sub: Any) -> None:
    from .. import contenders_lm  # noqa: F401  (registers the gpt family's contenders)
    from ..contenders import CONTENDERS

    cmp = sub.add_parser(
        "compare",
        help="run several growth methods on the same data, budget and seeds, then write a report",
        description=(
            "Run each method on each seed with the same data and epoch budget, log every run "
            "under --out, and write report.md and report.html there. Running it again skips "
            "finished runs and resumes interrupted ones. Settings not given come from --config "
            "(if given), else the defaults."
        ),
    )
    cmp.add_argument(
        "--methods",
        type=lambda t: [m.strip() for m in t.split(",") if m.strip()],
        default=None,
        help=f"comma-separated, from {','.join(CONTENDERS)} (default: all)",
    )
    cmp.add_argument(
        "--model",
        choices=("mlp", "gpt"),
        default=None,
        help="model family: mlp (classifiers; default) or gpt (a character-level language "
        "model on text_chars, grown by G_stack, MIDAS, MSG, HyperCloning and LEMON)",
    )
    cmp.add_argument(
        "--data",
        choices=(*CLI_DATASETS, "text_chars"),
        default=None,
        help="default fashion_mnist (mlp) or text_chars (gpt)",
    )
    cmp.add_argument("--budget", default=None, help="training epochs per run (default 10)")
    cmp.add_argument(
        "--seeds", type=_positive_int, default=None, help="number of seeds 0..N-1 (default 1)"
    )
    cmp.add_argument("--out", type=Path, default=None, help="the comparison's directory")
    cmp.add_argument("--config", type=Path, default=None, help="a TOML file of settings")
    cmp.add_argument("--name", default=None, help="a label for the report")
    cmp.add_argument("--width", type=_positive_int, default=None, help="start width (32)")
    cmp.add_argument(
        "--lr", type=_positive_float, default=None, help="SGD lr (0.05); gpt: AdamW peak (2e-3)"
    )
    cmp.add_argument("--batch-size", type=_positive_int, default=None, help="default 128")
    cmp.add_argument(
        "--epoch-tokens",
        type=_positive_int,
        default=None,
        help="gpt: training tokens per epoch (default the training split's length)",
    )
    cmp.add_argument("--train-size", type=_positive_int, default=None)
    cmp.add_argument("--test-size", type=_positive_int, default=None)
    cmp.add_argument("--threads", type=_positive_int, default=None, help="torch threads")
    cmp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    cmp.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: runs one after the other here; ray: one Ray task per run "
        "(pip install torchgrow[ray])",
    )
    cmp.add_argument(
        "--address", default=None, help="with --backend ray: an existing Ray cluster's address"
    )
    _add_nproc(cmp)
    cmp.add_argument(
        "--fsdp",
        action="store_true",
        default=None,
        help="with --nproc N: shard each run's model with fully_shard (FSDP2) over the N "
        "processes; methods static, random, gradmax",
    )
    cmp.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write each run's curves for TensorBoard (pip install torchgrow[tensorboard])",
    )
    cmp.set_defaults(subparser=cmp)
    rep = sub.add_parser(
        "report",
        help="write report.md and report.html of a comparison directory",
        description="Write report.md, report.html and the plots of a `torchgrow compare` run.",
    )
    rep.add_argument("out", type=Path, help="the comparison's directory")
    rep.set_defaults(subparser=rep)
