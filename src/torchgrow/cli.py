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
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import cli_fsdp, cli_user, distributed
from . import data as tg_data
from . import how as tg_how
from . import models as tg_models
from .grower import Grower
from .report import comparison_table, events_table, make_console, print_run_summary
from .size import Units
from .train import History, fit
from .when import Every
from .where import AllAtOnce

__all__ = ["METHODS", "Method", "register_method", "build_parser", "main"]

GrowerFactory = Callable[[nn.Module, torch.optim.Optimizer, argparse.Namespace], Grower | None]


@dataclass(frozen=True)
class Method:
    """A growth method the CLI can run.

    Attributes
    ----------
    name : str
        The ``--method`` value.
    summary : str
        One line for ``--help``.
    make_grower : callable
        ``make_grower(model, optimizer, args) -> Grower | None`` (``None``: no
        growth). ``args`` holds the parsed command line (``grow_every``,
        ``grow_start``, ``grow_times``, ``units``, ``seed``...).
    """

    name: str
    summary: str
    make_grower: GrowerFactory


METHODS: dict[str, Method] = {}
"""Growth methods by name (``--method``)."""


def register_method(method: Method) -> Method:
    """Add (or replace) a growth method of the ``torchgrow run`` command.

    Parameters
    ----------
    method : Method
        The method.

    Returns
    -------
    Method
        The same method.
    """
    METHODS[method.name] = method
    return method


def _every(args: argparse.Namespace) -> Every:
    return Every(args.grow_every, start=args.grow_start, times=args.grow_times)


def _how_grower(make_how: Callable[[argparse.Namespace], tg_how.How]) -> GrowerFactory:
    def factory(model: nn.Module, optimizer: torch.optim.Optimizer, args: argparse.Namespace):
        return Grower(
            model,
            optimizer,
            when=_every(args),
            where=AllAtOnce(),
            how=make_how(args),
            size=Units(args.units),
        )

    return factory


register_method(
    Method(
        "random",
        "random fan-out, zero fan-in (function-preserving; GradMax's random baseline)",
        _how_grower(lambda args: tg_how.Random(seed=args.seed)),
    )
)
register_method(
    Method(
        "gradmax",
        "GradMax: zero fan-in, fan-out from the SVD of the gradient (function-preserving); "
        "schedule from --grow-every/--grow-start/--grow-times, --units per layer",
        _how_grower(lambda args: tg_how.GradMax(seed=args.seed)),
    )
)
register_method(
    Method(
        "zero",
        "zero fan-in and fan-out (function-preserving)",
        _how_grower(lambda a: tg_how.Zero()),
    )
)
register_method(
    Method("static", "no growth: train the initial network as it is", lambda m, o, a: None)
)

CLI_DATASETS = ("mnist1d", "digits", "mnist5k", "fashion_mnist")


# --------------------------------------------------------------------------- argument types
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


# --------------------------------------------------------------------------- parser
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
    from . import contenders_lm  # noqa: F401  (registers the gpt family's contenders)
    from .contenders import CONTENDERS

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


# --------------------------------------------------------------------------- run
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


def _load_data(name: str, args: argparse.Namespace) -> tg_data.Dataset:
    ds = cli_user.user_dataset(name) if cli_user.is_user_spec(name) else tg_data.load(name)
    if args.train_size is not None or args.test_size is not None:
        if args.train_size is not None and args.train_size > ds.n_train:
            raise ValueError(f"--train-size {args.train_size} > {ds.n_train} training examples")
        if args.test_size is not None and args.test_size > ds.n_test:
            raise ValueError(f"--test-size {args.test_size} > {ds.n_test} test examples")
        ds = ds.subset(args.train_size, args.test_size, seed=args.seed)
    return ds


def _build_model(args: argparse.Namespace, ds: tg_data.Dataset) -> nn.Module:
    shape = ds.input_shape
    n_in = math.prod(shape)
    classes = ds.num_classes or 1
    common = {"activation": args.activation, "width_mult": args.width_mult}
    if args.widths is not None and args.model != "mlp":
        raise ValueError(f"--widths applies to --model mlp only, not {args.model}")
    if cli_user.is_user_spec(args.model):
        return cli_user.user_model(args.model, ds)
    if args.model == "mlp":
        widths = args.widths or [n_in, 16, 16, classes]
        if widths[0] != n_in or widths[-1] != classes:
            raise ValueError(
                f"--widths must start with the input width {n_in} and end with the number of "
                f"classes {classes} for {ds.name}, e.g. {n_in},16,{classes}; got "
                f"{','.join(map(str, widths))}"
            )
        return tg_models.mlp(widths, **common)
    if args.model == "lenet_300_100":
        return tg_models.lenet_300_100(in_features=n_in, num_classes=classes, **common)
    if len(shape) != 3:
        raise ValueError(
            f"--model {args.model} needs image data (channels, height, width); {ds.name} has "
            f"input shape {shape}: use --model mlp or lenet_300_100"
        )
    if args.model == "lenet5":
        return tg_models.lenet5(
            in_channels=shape[0], num_classes=classes, input_size=shape[1], **common
        )
    if args.model == "vgg_small":
        return tg_models.vgg_small(
            in_channels=shape[0], num_classes=classes, input_size=shape[1], **common
        )
    if args.model == "cifar_resnet":
        return tg_models.cifar_resnet(in_channels=shape[0], num_classes=classes, **common)
    return tg_models.build(args.model, **common)


def _build_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        lr = args.lr if args.lr is not None else 0.05
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
    lr = args.lr if args.lr is not None else 0.003
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=args.weight_decay)


def _cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.checkpoint_every is not None and args.out is None:
        parser.error("--checkpoint-every needs --out DIR (the checkpoint is written there)")
    if args.tensorboard and args.out is None:
        parser.error("--tensorboard needs --out DIR (the event files are written there)")
    if args.fsdp:
        cli_fsdp.check(args, parser)
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device: {exc}")
    try:
        ds = _load_data(args.data, args)
    except FileNotFoundError as exc:
        print(f"torchgrow run: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        parser.error(str(exc))
    console = make_console()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.resume is not None:
        model = optimizer = grower = None
    else:
        try:
            model = _build_model(args, ds).to(device)
        except ValueError as exc:
            parser.error(str(exc))
        if args.fsdp:
            cli_fsdp.shard(model, ds.x_train[:4], device)
        optimizer = _build_optimizer(args, model)
        grower = METHODS[args.method].make_grower(model, optimizer, args)
        if args.fsdp:
            grower = cli_fsdp.grower_for(grower)
    start = time.perf_counter()
    history = fit(
        model,
        optimizer,
        ds,
        epochs=args.epochs,
        grower=grower,
        batch_size=args.batch_size,
        seed=args.seed,
        log_dir=args.out,
        checkpoint_every=args.checkpoint_every,
        progress=args.progress,
        resume_from=args.resume,
        tensorboard=args.tensorboard,
    )
    settings = {
        "data": f"{ds.name} ({ds.n_train} train / {ds.n_test} test)",
        "model": f"{args.model} ({args.activation})",
        "optimizer": f"{args.optimizer}, lr {history.optimizer.param_groups[0]['lr']:g}"
        if history.optimizer is not None
        else args.optimizer,
        "method": args.method if args.resume is None else f"resumed from {args.resume}",
    }
    print_run_summary(
        history, title=f"torchgrow run: {args.method}", console=console, settings=settings
    )
    if args.out is not None:
        console.print(f"logs written to {args.out}")
    console.print(f"training time {time.perf_counter() - start:.1f} s")
    return 0


# --------------------------------------------------------------------------- demo
@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``torchgrow demo``."""

    n_samples: int | None = None  # mnist1d default: 5,000 (4,000 train / 1,000 test)
    hidden: int = 8
    depth: int = 2
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.003
    grow_every: int = 200
    grow_times: int = 4
    units: int = 16


DEMO = DemoConfig()
DEMO_QUICK = DemoConfig(
    n_samples=2000, epochs=8, batch_size=32, grow_every=50, grow_times=3, units=8
)


def _demo_run(
    name: str,
    widths: list[int],
    ds: tg_data.Dataset,
    cfg: DemoConfig,
    *,
    grow: bool,
    seed: int,
    out: Path | None,
    progress: bool | None,
) -> History:
    torch.manual_seed(seed)
    model = tg_models.mlp(widths, activation="relu1")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    grower = None
    if grow:
        grower = Grower(
            model,
            optimizer,
            when=Every(cfg.grow_every, start=cfg.grow_every, times=cfg.grow_times),
            where=AllAtOnce(),
            how=tg_how.Random(seed=seed),
            size=Units(cfg.units),
        )
    return fit(
        model,
        optimizer,
        ds,
        epochs=cfg.epochs,
        grower=grower,
        batch_size=cfg.batch_size,
        seed=seed,
        log_dir=None if out is None else out / name,
        progress=progress,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    cfg = DEMO_QUICK if args.quick else DEMO
    if args.epochs is not None:
        cfg = DemoConfig(**{**cfg.__dict__, "epochs": args.epochs})
    console = make_console()
    arrow = "→" if (console.encoding or "").lower().startswith("utf") else "->"
    start = time.perf_counter()
    threads = torch.get_num_threads()
    # These networks are tiny: one thread is fastest, and several threads slow to a crawl
    # when the cores are shared with other processes.
    torch.set_num_threads(1)
    try:
        _demo_body(args, cfg, console, arrow)
    finally:
        torch.set_num_threads(threads)
    console.print(f"total time {time.perf_counter() - start:.1f} s")
    return 0


def _demo_body(args: argparse.Namespace, cfg: DemoConfig, console: Any, arrow: str) -> None:
    ds = tg_data.mnist1d(seed=args.seed, n_samples=cfg.n_samples)
    classes = ds.num_classes or 10
    small = [ds.input_shape[0], *[cfg.hidden] * cfg.depth, classes]
    final_hidden = cfg.hidden + cfg.units * cfg.grow_times
    large = [ds.input_shape[0], *[final_hidden] * cfg.depth, classes]
    console.rule("torchgrow demo: growing an MLP on MNIST-1D")
    console.print(
        f"data: mnist1d ({ds.n_train} train / {ds.n_test} test, generated locally); "
        f"Adam lr {cfg.lr:g}, batch {cfg.batch_size}, {cfg.epochs} epochs"
    )
    console.print(
        f"grown: {'-'.join(map(str, small))} ReLU1 MLP; every {cfg.grow_every} steps "
        f"({cfg.grow_times} times) each hidden layer gets {cfg.units} random zero-fan-in units "
        f"{arrow} {'-'.join(map(str, large))}"
    )
    console.print(
        f"baselines: {'-'.join(map(str, small))} and {'-'.join(map(str, large))} trained "
        "statically for the same number of steps"
    )
    runs: dict[str, History] = {}
    plan = [
        ("grown", small, True),
        ("static small", small, False),
        ("static large", large, False),
    ]
    for name, widths, grow in plan:
        runs[name] = _demo_run(
            name.replace(" ", "_"),
            widths,
            ds,
            cfg,
            grow=grow,
            seed=args.seed,
            out=args.out,
            progress=args.progress,
        )
    grown = runs["grown"]
    console.print(
        events_table(grown.events, title="Growth events of the grown run", console=console)
    )
    console.print(comparison_table(runs, title="Test results", console=console))
    acc = {k: (h.last or {}).get("val_accuracy") for k, h in runs.items()}
    if acc["grown"] is not None and acc["static small"] is not None:
        diff = 100 * (acc["grown"] - acc["static small"])
        verdict = "better than" if diff > 0 else "not better than"
        console.print(
            f"grown network: {100 * acc['grown']:.1f}% test accuracy, {verdict} the static small "
            f"network ({100 * acc['static small']:.1f}%, {diff:+.1f} points)"
        )
        large_run = runs["static large"].last
        if acc["static large"] is not None and large_run is not None:
            ratio = large_run["training_flops"] / max(grown.last["training_flops"], 1)
            console.print(
                f"the final-size network trained from the start reaches "
                f"{100 * acc['static large']:.1f}%, using {ratio:.2f}x the training FLOPs "
                "of the grown run"
            )
    deltas = [e.max_abs_delta for e in grown.events if math.isfinite(e.max_abs_delta)]
    if deltas:
        console.print(f"largest output change caused by a growth step: {max(deltas):.2e}")
    if args.out is not None:
        console.print(f"logs written to {args.out}")


# --------------------------------------------------------------------------- compare, report
def _cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .compare import CompareConfig, parse_budget, run_compare
    from .errors import GrowthInputError

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
    from .report import write_report

    try:
        md, html = write_report(args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"torchgrow report: {exc}", file=sys.stderr)
        return 2
    console = make_console()
    console.print(md.read_text(), markup=False, highlight=False)
    console.print(f"report written to {md} and {html}")
    return 0


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
