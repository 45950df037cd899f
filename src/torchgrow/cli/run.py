"""``torchgrow run``: one model, one data set, one growth method (or none)."""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from torch import nn

from .. import cli_fsdp, cli_user
from .. import data as tg_data
from .. import models as tg_models
from ..report import make_console, print_run_summary
from ..train import fit
from .methods import METHODS

__all__ = []


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
