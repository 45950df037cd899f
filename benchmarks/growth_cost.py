"""What growth costs against the arithmetic it needs: training speed, events, scaling, masks, start-up.

1. **A grown model trains at the speed of one built at its size, over a whole
   run.** GradMax grows LeNet-300-100 (``relu1``) from 784-75-25-10 to
   784-300-100-10 on Fashion-MNIST: 12 events over 8 epochs, SGD momentum 0.9,
   batch 128. Then whole epochs of the grown model and of the same
   architecture built directly (trained one epoch first, so that its momentum
   is populated) alternate, and the ratio of their CPU times is reported, in
   ``torchgrow.train.fit`` and in the README's own training loop (which calls
   ``grower.step`` after each optimizer step; the built model's loop has no
   grower); the share of momentum entries that are subnormal floats at the end
   of the job says why they differ.
2. **A growth event near its floor.** One GradMax event (the method's
   defaults) on each model, against its floor: one forward+backward on the
   growth batch plus the thin SVD, in float32, of the matrix of each grown
   unit (``fan-in dim x fan-out dim``; for a pair without a closed form the
   same shape). The event is timed with the default ``measure=True`` and with
   ``measure=False``; for the pairs solved by the conv closed form, the time
   to build their matrix from the growth batch's statistics is shown too, and
   the event against floor + build.
3. **Cost against size.** The GradMax event of a 4-layer MLP
   784-W-W-W-10 against its training step, W = 256 ... 4,096, and the
   all-at-once growth step (every unit +1, no statistics) of MLPs and
   CIFAR-style ResNets against depth; exponents are least-squares fits of
   log time on log size.
4. **Masked connections.** A LeNet-300-100 training step with NeST's
   connection masks on every layer (density 0.1 and 1.0) against the plain
   model.
5. **Start-up.** ``python -X importtime -c "import torchgrow"``: the import's
   time beyond torch's; and ``torchgrow compare --methods static,gradmax
   --data digits --seeds 1``: its wall time against the sum of its runs'
   training times, and the part of it that is torch's own start-up (``import
   torch`` and the first optimizer's lazy import of ``torch._dynamo``),
   measured in a fresh interpreter.

Times are medians of repeats; the two sides of every ratio alternate round by
round in one process (1 thread), so that drift of a shared machine hits both.
``--baseline COMMIT`` adds the committed result of an earlier commit as the
"before" columns.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import ROOT, markdown_table, write_results
from torchgrow import Grower, methods, models
from torchgrow import data as tg_data
from torchgrow.how import GradMax as GradMaxHow
from torchgrow.how import Random
from torchgrow.how.pair_matrix import conv_pair_matrix
from torchgrow.ops.masks import apply_mask
from torchgrow.size import Size
from torchgrow.train import fit
from torchgrow.when import Every
from torchgrow.where import AllAtOnce

THREADS = 1
BATCH = 128
LR = 0.05
MOMENTUM = 0.9


# ------------------------------------------------------------------------------ timing helpers
def alternate(fns: dict[str, Callable[[], Any]], rounds: int, clock=time.perf_counter) -> dict:
    """Median seconds of each function, the functions alternating round by round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = clock()
            fns[k]()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def exponent(sizes: list[float], times: list[float]) -> float:
    """Least-squares slope of log(time) on log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in times]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y) -> Callable[[], None]:
    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def fashion(n: int | None = None) -> tg_data.Dataset:
    ds = tg_data.fashion_mnist()
    if n is None:
        return ds
    return tg_data.Dataset(
        ds.name, ds.x_train[:n], ds.y_train[:n], ds.x_test[: n // 5], ds.y_test[: n // 5],
        ds.num_classes, ds.input_shape, ds.task,
    )  # fmt: skip


# ------------------------------------------------------------------ 1. training speed of a run
class ToWidth(Size):
    """Grow each unit from its width to ``targets[unit]`` in ``events`` near-equal steps."""

    def __init__(self, targets: dict[str, int], events: int) -> None:
        self.targets, self.events = targets, events
        self.start: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def units(self, unit) -> int:  # noqa: ANN001
        start = self.start.setdefault(unit.name, unit.width)
        i = self.done.get(unit.name, 0)
        self.done[unit.name] = i + 1
        delta = self.targets[unit.name] - start
        return round(delta * (i + 1) / self.events) - round(delta * i / self.events)

    def describe(self) -> str:
        return f"to {self.targets} in {self.events} events"


def subnormal_share(opt: torch.optim.Optimizer) -> tuple[int, int]:
    """(subnormal, total) entries of the optimizer's momentum buffers."""
    tiny = torch.finfo(torch.float32).tiny
    sub = tot = 0
    for state in opt.state.values():
        buf = state.get("momentum_buffer")
        if buf is not None:
            sub += int(((buf != 0) & (buf.abs() < tiny)).sum())
            tot += buf.numel()
    return sub, tot


def grown_lenet(
    ds: tg_data.Dataset, epochs: int
) -> tuple[nn.Module, torch.optim.SGD, Grower, dict]:
    """The GradMax job: LeNet-300-100 grown from 0.25x to 1x in 12 events over ``epochs``."""
    torch.manual_seed(0)
    model = models.lenet_300_100(width_mult=0.25, activation="relu1")
    opt = sgd(model)
    steps = epochs * math.ceil(ds.n_train / BATCH)
    every = max(1, round(steps * 2500 / 78200))  # the paper's schedule scaled to the run
    grower = Grower(  # methods.GradMax's settings, with sizes that land on 300 and 100
        model, opt, when=Every(every, start=4 * every, times=12), where=AllAtOnce(),
        how=GradMaxHow(), size=ToWidth({"fc1": 300, "fc2": 100}, 12),
    )  # fmt: skip
    t0 = time.perf_counter()
    hist = fit(model, opt, ds, epochs=epochs, grower=grower, eval_every="last", progress=False,
               batch_size=BATCH, seed=0)  # fmt: skip
    info = {
        "events": len({e.step for e in hist.events}),
        "widths": [model.fc1.out_features, model.fc2.out_features],
        "train_s": time.perf_counter() - t0,
        "test_accuracy": hist.last["val_accuracy"],  # fit evaluates on the test split
    }
    return model, opt, grower, info


def run_speed(quick: bool) -> dict[str, Any]:
    ds = fashion(2560 if quick else None)
    epochs, rounds = (2, 2) if quick else (8, 5)
    grown, g_opt, grower, info = grown_lenet(ds, epochs)
    torch.manual_seed(1)
    built = models.lenet_300_100(activation="relu1")
    b_opt = sgd(built)
    loader = DataLoader(TensorDataset(ds.x_train, ds.y_train), batch_size=BATCH, shuffle=True,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip

    def loop(model: nn.Module, opt: torch.optim.Optimizer, grower: Grower | None = None):
        """The README's own training loop (``grower.step`` after each optimizer step)."""

        def epoch() -> None:
            for x, y in loader:
                train_step(model, opt, x, y)()
                if grower is not None:
                    grower.step((x, y))

        return epoch

    def in_fit(model: nn.Module, opt: torch.optim.Optimizer, grower: Grower | None = None):
        return lambda: fit(model, opt, (loader, None), epochs=1, grower=grower, progress=False)

    loop(built, b_opt)()  # the built model's momentum is populated like the grown one's
    sub, tot = subnormal_share(g_opt)
    rows = []
    for name, make in (("train.fit", in_fit), ("own loop", loop)):
        t = alternate({"grown": make(grown, g_opt, grower), "built": make(built, b_opt)}, rounds,
                      clock=time.process_time)  # fmt: skip
        rows.append({"training": name, "grown epoch (s)": t["grown"],
                     "built epoch (s)": t["built"], "ratio": t["grown"] / t["built"]})  # fmt: skip
    flush = torch.set_flush_denormal(True)
    try:
        t = alternate({"grown": loop(grown, g_opt, grower), "built": loop(built, b_opt)}, rounds,
                      clock=time.process_time)  # fmt: skip
    finally:
        torch.set_flush_denormal(False)
    if flush:
        rows.append({"training": "own loop, torch.set_flush_denormal(True)",
                     "grown epoch (s)": t["grown"], "built epoch (s)": t["built"],
                     "ratio": t["grown"] / t["built"]})  # fmt: skip
    return {"job": info, "subnormal_momentum": [sub, tot], "rows": rows}


# ----------------------------------------------------------------------- 2. events and floors
class TwoConv(nn.Sequential):
    """conv 3x3 (16) -> relu1 -> conv 3x3 (32) -> relu1 -> global pool -> linear, on 28x28."""

    def __init__(self) -> None:
        from torchgrow.nn import ReLU1

        super().__init__(
            nn.Conv2d(1, 16, 3, padding=1), ReLU1(), nn.Conv2d(16, 32, 3, padding=1), ReLU1(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )  # fmt: skip


EVENT_MODELS: dict[str, tuple[Callable[[], nn.Module], list[str] | None, bool]] = {
    # name: (build, layers grown (None: the method's default), flattened input)
    "LeNet-300-100 (both hidden)": (
        lambda: models.lenet_300_100(activation="relu1"), None, True),
    "2-conv net 28x28 (conv 1)": (TwoConv, ["0"], False),
    "LeNet-5 conv1 (pool between)": (lambda: models.lenet5(activation="relu1"), ["conv1"], False),
    "CifarResNet 3-3-3": (
        lambda: models.cifar_resnet((3, 3, 3), in_channels=1, activation="relu1"), None, False),
    # as benchmarks/gradmax_images.py grows it (the paper's configs use no normalisation)
    "vgg_small (no BN)": (
        lambda: models.vgg_small(batchnorm=False, activation="relu1"), None, False),
}  # fmt: skip


def pair_shape(model: nn.Module, unit) -> tuple[int, int]:  # noqa: ANN001
    """The shape of a unit's GradMax matrix: (fan-in dim, fan-out dim)."""
    mods = dict(model.named_modules())
    rows = sum(mods[p].weight[0].numel() for p in unit.producers)
    cols = 0
    for c in unit.consumers:
        w = mods[c.name].weight
        cols += w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
    return rows, cols


def conv_builds(model: nn.Module, units: list, x: Tensor, y: Tensor) -> list[Callable[[], Any]]:
    """For each unit GradMax solves by the conv closed form, a call that builds its matrix
    from the growth batch's statistics (the producer's input, the consumer's output gradient)."""
    mods = dict(model.named_modules())
    kind = GradMaxHow()._kind
    conv = [u for u in units if kind(u, mods) == "conv"]
    inputs: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}

    def keep_input(name: str) -> Callable[..., None]:
        return lambda mod, args, out: inputs.__setitem__(name, args[0].detach())

    def keep_grad(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple, out: Tensor) -> None:
            out.register_hook(lambda g: grads.__setitem__(name, g.detach()))

        return hook

    handles = [mods[u.producers[0]].register_forward_hook(keep_input(u.producers[0])) for u in conv]
    handles += [mods[u.consumers[0].name].register_forward_hook(keep_grad(u.consumers[0].name))
                for u in conv]  # fmt: skip
    try:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    return [
        (lambda p=u.producers[0], c=u.consumers[0].name: conv_pair_matrix(
            inputs[p], grads[c], mods[p], mods[c]))
        for u in conv
    ]  # fmt: skip


def event_row(name: str, rounds: int, batch: int = BATCH) -> dict[str, Any]:
    build, layers, flat = EVENT_MODELS[name]
    torch.manual_seed(0)
    template = build().train()
    ds = fashion(batch)
    x, y = ds.x_train[:batch], ds.y_train[:batch]
    x = x.flatten(1) if flat else x

    def event(measure: bool) -> Callable[[], Any]:
        def run() -> Any:
            m = copy.deepcopy(template)
            grower = methods.GradMax(m, sgd(m), layers=layers, start_iteration=1, measure=measure)
            t0 = time.perf_counter()
            events = grower.grow((x, y))
            return time.perf_counter() - t0, events

        return run

    def fwd_bwd() -> None:
        template.zero_grad(set_to_none=True)
        F.cross_entropy(template(x), y).backward()

    grower = methods.GradMax(copy.deepcopy(template), None, layers=layers)
    units = grower.where.select(grower.candidates(), grower.state)
    shapes = [pair_shape(template, u) for u in units]
    mats = [torch.randn(*s) for s in shapes]

    def svds() -> None:
        for a in mats:
            torch.linalg.svd(a, full_matrices=False)

    builds = conv_builds(template, units, x, y)

    def build_matrices() -> None:
        for f in builds:
            f()

    floor = alternate({"fwd_bwd": fwd_bwd, "svd": svds, "build": build_matrices}, 2 * rounds + 1)
    ev: dict[str, list[float]] = {"default": [], "measure=False": []}
    solvers: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        event(True)()  # warm-up
        for r in range(rounds):
            for key in ("default", "measure=False") if r % 2 == 0 else ("measure=False", "default"):
                t, events = event(key == "default")()
                ev[key].append(t)
                solvers |= {e.info.get("solver", "?") for e in events}
    fl = floor["fwd_bwd"] + floor["svd"]
    ev_med = {k: statistics.median(v) for k, v in ev.items()}
    return {
        "model": name, "units": len(units), "solvers": ",".join(sorted(solvers)),
        "floor (ms)": 1e3 * fl, "fwd+bwd (ms)": 1e3 * floor["fwd_bwd"],
        "svd (ms)": 1e3 * floor["svd"], "event (ms)": 1e3 * ev_med["default"],
        "event, measure=False (ms)": 1e3 * ev_med["measure=False"],
        "conv matrix build (ms)": 1e3 * floor["build"],
        "event / floor": ev_med["default"] / fl,
        "event / (floor + build)": ev_med["default"] / (fl + floor["build"]),
    }  # fmt: skip


# ---------------------------------------------------------------------------- 3. size scaling
def width_row(width: int, rounds: int) -> dict[str, Any]:
    torch.manual_seed(0)
    template = models.mlp([784, width, width, width, 10], activation="relu1").train()
    ds = fashion(BATCH)
    x, y = ds.x_train[:BATCH].flatten(1), ds.y_train[:BATCH]
    big = copy.deepcopy(template)
    step = alternate({"step": train_step(big, sgd(big), x, y)}, 2 * rounds + 1)["step"]
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(rounds):
            m = copy.deepcopy(template)
            grower = methods.GradMax(m, sgd(m), start_iteration=1)
            t0 = time.perf_counter()
            grower.grow((x, y))
            times.append(time.perf_counter() - t0)
    event = statistics.median(times)
    return {"width": width, "training step (s)": step, "event (s)": event,
            "event / step": event / step}  # fmt: skip


def depth_row(family: str, depth: int, rounds: int) -> dict[str, Any]:
    from benchmarks.graph_coverage import DeepMLP

    def build() -> nn.Module:
        if family == "MLP":
            return DeepMLP(depth)
        n = (depth - 2) // 6
        return models.cifar_resnet((n, n, n), channels=(4, 8, 16), in_channels=1)

    x = torch.randn(8, 16) if family == "MLP" else torch.randn(8, 1, 16, 16)
    y = torch.randn(8, 4) if family == "MLP" else torch.randint(0, 10, (8,))
    loss = F.mse_loss if family == "MLP" else F.cross_entropy
    times, grown = [], 0
    for r in range(rounds):
        torch.manual_seed(r)
        m = build()
        grower = Grower(m, sgd(m), when=Every(1, times=1), how=Random(seed=r))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # new units behind ReLU are dead: not timed here
            t0 = time.perf_counter()
            grown = len(grower.step((x, y), loss_fn=loss))
            times.append(time.perf_counter() - t0)
    return {"family": family, "layers": depth, "units grown": grown,
            "growth step (s)": statistics.median(times)}  # fmt: skip


def run_scaling(quick: bool) -> dict[str, Any]:
    widths = [64, 128, 256] if quick else [256, 512, 1024, 2048, 4096]
    wrows = [width_row(w, 1 if quick or w >= 2048 else 3) for w in widths]
    for key in ("training step (s)", "event (s)"):
        e = exponent(widths, [r[key] for r in wrows])
        for r in wrows:
            r[key.split(" (")[0] + " exponent"] = e
    depths = {"MLP": [12, 24] if quick else [12, 48, 192],
              "CifarResNet": [8, 14] if quick else [20, 56, 110]}  # fmt: skip
    drows = []
    for family, ds in depths.items():
        rows = [depth_row(family, d, 1 if quick else 3) for d in ds]
        e = exponent(ds, [r["growth step (s)"] for r in rows])
        for r in rows:
            r["exponent"] = e
        drows += rows
    return {"width": wrows, "depth": drows}


# ------------------------------------------------------------------------------ 4. masks
def run_masks(quick: bool) -> list[dict[str, Any]]:
    ds = fashion(BATCH)
    x, y = ds.x_train[:BATCH].flatten(1), ds.y_train[:BATCH]
    rows = []
    for density in (0.1, 1.0):
        torch.manual_seed(0)
        plain = models.lenet_300_100()
        masked = copy.deepcopy(plain)
        m_opt = sgd(masked)
        gen = torch.Generator().manual_seed(0)
        for layer in (masked.fc1, masked.fc2, masked.fc3):
            apply_mask(layer, density=density, generator=gen, optimizer=m_opt)
        steps = {"plain": train_step(plain, sgd(plain), x, y),
                 "masked": train_step(masked, m_opt, x, y)}  # fmt: skip
        reps = 5 if quick else 50

        def many(f: Callable[[], None], reps: int = reps) -> Callable[[], None]:
            return lambda: [f() for _ in range(reps)]

        t = alternate({k: many(f) for k, f in steps.items()}, 3 if quick else 21)
        rows.append({"density": density, "plain step (ms)": 1e3 * t["plain"] / reps,
                     "masked step (ms)": 1e3 * t["masked"] / reps,
                     "ratio": t["masked"] / t["plain"]})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------ 5. start-up
def import_time() -> dict[str, Any]:
    """``-X importtime`` of ``import torchgrow``: the total, torch's share, torchgrow's own modules
    and the largest other packages (self times summed per top-level package, outside torch's)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import torchgrow"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stderr  # fmt: skip
    lines = []  # (self s, cumulative s, depth, module), children before their parent
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if m:
            lines.append((int(m[1]) / 1e6, int(m[2]) / 1e6, (len(m[3]) - 1) // 2, m[4]))
    in_torch = [False] * len(lines)
    for i, (_, _, depth, name) in enumerate(lines):
        if name == "torch" or name.startswith("torch."):
            in_torch[i] = True
            j = i - 1
            while j >= 0 and lines[j][2] > depth:  # the subtree this import pulled in
                in_torch[j] = True
                j -= 1
    per_package: dict[str, float] = {}
    for (own, _, _, name), torch_part in zip(lines, in_torch, strict=True):
        key = "torch" if torch_part else name.split(".")[0]
        per_package[key] = per_package.get(key, 0.0) + own
    total = sum(per_package.values())
    others = sorted(((v, k) for k, v in per_package.items() if k not in ("torch", "torchgrow")),
                    reverse=True)[:4]  # fmt: skip
    return {"import torchgrow (s)": total, "torch (s)": per_package.get("torch", 0.0),
            "torchgrow's modules (s)": per_package.get("torchgrow", 0.0),
            "largest other packages (s)": ", ".join(f"{k} {v:.2f}" for v, k in others)}  # fmt: skip


def compare_wall(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torchgrow", "compare", "--methods", "static,gradmax",
               "--data", "digits", "--seeds", "1", "--out", tmp]  # fmt: skip
        if quick:
            cmd += ["--budget", "3", "--train-size", "300", "--test-size", "100"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        train = sum(json.loads(p.read_text())["wall_seconds"]
                    for p in Path(tmp).rglob("result.json"))  # fmt: skip
    probe = ("import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
             "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1); "
             "print(t1 - t0, time.perf_counter() - t1)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    t_import, t_optim = (float(v) for v in out.stdout.split())
    fixed = t_import + t_optim
    return {"compare wall (s)": wall, "sum of training (s)": train, "ratio": wall / train,
            "import torch (s)": t_import, "torch's first optimizer (s)": t_optim,
            "ratio without torch's start-up": (wall - fixed) / train}  # fmt: skip


# ------------------------------------------------------------------------------ report
def _baseline(commit: str | None) -> dict[str, Any] | None:
    if commit is None:
        return None
    text = subprocess.run(["git", "show", f"{commit}:benchmarks/results/growth_cost.json"],
                          capture_output=True, text=True, check=True, cwd=ROOT).stdout  # fmt: skip
    return json.loads(text)


def tables(res: dict[str, Any], before: dict[str, Any] | None) -> dict[str, str]:
    def with_before(rows: list[dict], part: str, key: str, value: str) -> list[dict]:
        if before is None:
            return rows
        old = {r[key]: r[value] for r in before["results"][part] if key in r}
        return [{**r, f"{value}, before": old.get(r[key], "")} for r in rows]

    sp = res["speed"]
    sub, tot = sp["subnormal_momentum"]
    out = {
        "speed": markdown_table(with_before(sp["rows"], "speed_rows", "training", "ratio")),
        "speed_note": (
            f"{sub:,} of {tot:,} momentum entries ({100 * sub / max(tot, 1):.0f} %) "
            f"are subnormal floats"
        ),  # fmt: skip
        "events": markdown_table(with_before(res["events"], "events", "model", "event / floor")),
        "width": markdown_table(with_before(res["width"], "width", "width", "event / step")),
        "depth": markdown_table(with_before(res["depth"], "depth", "layers", "growth step (s)")),
        "masks": markdown_table(with_before(res["masks"], "masks", "density", "ratio")),
        "import": markdown_table([res["import"]]),
        "compare": markdown_table(
            [
                res["compare"]
                if before is None
                else {**res["compare"], "ratio, before": before["results"]["compare"]["ratio"]}
            ]
        ),  # fmt: skip
    }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--baseline", default=None, help="commit whose result is the 'before'")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    speed = run_speed(args.quick)
    if args.quick:  # the three small models, a small batch
        events = [event_row(n, 1, batch=32) for n in list(EVENT_MODELS)[:3]]
    else:
        events = [event_row(n, 5) for n in EVENT_MODELS]
    scaling = run_scaling(args.quick)
    masks = run_masks(args.quick)
    results = {
        "speed_rows": speed["rows"], "speed": speed, "events": events,
        "width": scaling["width"], "depth": scaling["depth"], "masks": masks,
        "import": import_time(), "compare": compare_wall(args.quick),
    }  # fmt: skip
    before = _baseline(args.baseline)
    tabs = tables(results, before)
    payload = {
        "quick": args.quick,
        "threads": args.threads,
        "results": results,
        "baseline": None if before is None else {"commit": before["meta"]["commit"]},
        "wall_s": time.perf_counter() - t0,
    }
    md = "\n".join(f"## {k}\n\n{v}\n" for k, v in tabs.items())
    write_results("growth_cost", payload, md, argv=argv, tables=tabs)
    return payload


if __name__ == "__main__":
    main()
