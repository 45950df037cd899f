"""What the dependency analysis can grow, whether every edit it allows is sound, and its cost.

Three measurements:

1. **Coverage**: for each model family, the Linear/Conv layers whose output
   units can be widened, found by ``torch.fx`` tracing (the analysis torchgrow
   had before) and by the recorded forward, against all of them.
2. **Soundness**: every growable unit of every family is widened twice, with a
   zero fan-in and a random fan-out, then with a random fan-in and a zero
   fan-out (AdamW carried); each edit either returns and leaves a model whose
   forward runs and whose output moved by at most 1e-5 (checked here, outside
   the edit's own verification), or is refused. Shrinking back must restore the
   parameters exactly. An edit that returns and leaves a broken model counts as
   broken; the target is zero.
3. **Cost against depth**: analysis time of MLPs of 12, 48 and 192 Linear layers
   (median of repeats, fx and recorded interleaved, 1 thread), and the time of
   one all-at-once growth step (``Grower`` with random function-preserving
   growth of every unit), with its scaling exponent in the number of layers.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.common import markdown_table, write_results
from benchmarks.graph_zoo import MobileNetV3ish, UNet
from torchgrow import Grower, models
from torchgrow.errors import TorchgrowError
from torchgrow.graph import analyse, set_example
from torchgrow.graph.fx_trace import analyse_fx
from torchgrow.how import Random
from torchgrow.ops import check_consistent, shrink, widen
from torchgrow.ops.registry import lookup
from torchgrow.when import Every

THREADS = 1
DEPTHS = (12, 48, 192)
VOCAB = 64


def _hf(kind: str) -> tuple[nn.Module, dict[str, Any]] | None:
    try:
        import transformers as T
    except ImportError:
        return None
    T.logging.set_verbosity_error()
    ids = torch.randint(0, VOCAB, (2, 8))
    small = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=48)
    if kind == "BERT":
        cfg = T.BertConfig(vocab_size=VOCAB, hidden_size=32, max_position_embeddings=16, **small)
        return T.BertForSequenceClassification(cfg), {"input_ids": ids}
    if kind == "GPT-2":
        cfg = T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=16)
        return T.GPT2LMHeadModel(cfg), {"input_ids": ids}
    if kind == "Llama":
        cfg = T.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, max_position_embeddings=16, num_key_value_heads=1,
            **small,
        )  # fmt: skip
        return T.LlamaForCausalLM(cfg), {"input_ids": ids}
    cfg = T.ViTConfig(
        image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_labels=10, **small
    )
    return T.ViTForImageClassification(cfg), {"pixel_values": torch.rand(2, 1, 16, 16)}


def families() -> dict[str, Callable[[], tuple[nn.Module, dict[str, Any]] | None]]:
    """Family name -> builder of ``(model, example inputs as keywords)``."""

    def tg(build: Callable[[], nn.Module], shape: tuple[int, ...]):
        return lambda: (build(), {"x": torch.randn(2, *shape)})

    return {
        "LeNet-300-100": tg(models.lenet_300_100, (784,)),
        "LeNet-5": tg(models.lenet5, (1, 28, 28)),
        "CifarResNet 2-2-2": tg(lambda: models.cifar_resnet((2, 2, 2), (8, 16, 32)), (3, 16, 16)),
        "WRN-10-1": tg(lambda: models.wide_resnet(depth=10, k=1), (3, 16, 16)),
        "VGG-11": tg(lambda: models.vgg11(in_channels=3), (3, 32, 32)),
        "MobileNet-v1 x0.25": tg(lambda: models.mobilenet_v1(width_mult=0.25), (3, 32, 32)),
        "UNet (cat skips, interpolate)": tg(UNet, (1, 16, 16)),
        "MobileNetV3-style (SE, depthwise)": tg(MobileNetV3ish, (1, 16, 16)),
        "BERT": lambda: _hf("BERT"),
        "GPT-2": lambda: _hf("GPT-2"),
        "Llama": lambda: _hf("Llama"),
        "ViT": lambda: _hf("ViT"),
    }


def _layers(model: nn.Module) -> list[str]:
    """Every Linear/Conv layer (and transformers' Conv1D) of the model."""
    out = []
    for n, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) or type(m).__name__ == "Conv1D":
            out.append(n)
    return out


def _call(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    out = model(**inputs) if "x" not in inputs else model(inputs["x"])
    return out.logits if hasattr(out, "logits") else out


def _growable(wiring) -> set[str]:  # noqa: ANN001
    return {p for u in wiring.units for p in u.producers}


def coverage_row(name: str, model: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    layers = set(_layers(model))
    try:
        fx = len(_growable(analyse_fx(model)) & layers)
        fx_s = f"{fx}/{len(layers)}"
    except TorchgrowError as exc:
        fx_s = f"fails ({type(exc).__name__})"
    if "x" in inputs:
        set_example(model, inputs["x"])
    else:
        set_example(model, **inputs)
    wiring = analyse(model)
    rec = len(_growable(wiring) & layers)
    return {
        "family": name,
        "layers": len(layers),
        "fx (before)": fx_s,
        "recorded forward (after)": f"{rec}/{len(layers)}",
        "units": len(wiring.units),
        "_wiring": wiring,
    }


def soundness(model: nn.Module, inputs: dict[str, Any], wiring) -> dict[str, int]:  # noqa: ANN001
    """Widen every unit both ways, check the model ourselves, shrink back."""
    counts = {"edits": 0, "returned": 0, "refused": 0, "broken": 0, "restored": 0}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _call(model, inputs).float().square().mean().backward()
    opt.step()
    opt.zero_grad()
    for unit in wiring.units:
        for side in ("out", "in"):
            counts["edits"] += 1
            with torch.no_grad():
                y0 = _call(model, inputs)
            before = {k: v.clone() for k, v in model.state_dict().items()}
            g = torch.Generator().manual_seed(counts["edits"])
            kw: dict[str, Any] = {}
            if side == "out":
                kw["fan_out"] = {
                    c.name: 0.1 * torch.randn(lookup(m).fan_out_shape(m, 2, c.factor), generator=g)
                    for c in unit.consumers
                    for m in [model.get_submodule(c.name)]
                }
            else:
                kw["fan_in"] = {
                    p: 0.1 * torch.randn(lookup(m).fan_in_shape(m, 2), generator=g)
                    for p in unit.producers
                    for m in [model.get_submodule(p)]
                }
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rec = widen(model, unit.name, 2, optimizer=opt, **kw)
            except TorchgrowError:
                counts["refused"] += 1
                continue
            counts["returned"] += 1
            try:
                with torch.no_grad():
                    moved = float((_call(model, inputs) - y0).abs().max())
                check_consistent(model, opt)
                broken = rec.details["preserving"] and not moved <= 1e-5
            except Exception:  # noqa: BLE001  (a broken model is what we count)
                broken = True
            counts["broken"] += int(broken)
            shrink(model, unit.name, range(unit.width), optimizer=opt)
            after = model.state_dict()
            counts["restored"] += int(all(torch.equal(v, after[k]) for k, v in before.items()))
    return counts


class DeepMLP(nn.Module):
    """``depth`` Linear layers in an ``nn.ModuleList`` (so that fx really traces it)."""

    def __init__(self, depth: int, width: int = 32) -> None:
        super().__init__()
        dims = [16] + [width] * (depth - 1) + [4]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:], strict=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.tanh(layer(x))
        return self.layers[-1](x)


def _mlp(depth: int) -> DeepMLP:
    return DeepMLP(depth)


def cost(depths: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for depth in depths:
        torch.manual_seed(0)
        model = _mlp(depth)
        x, y = torch.randn(16, 16), torch.randn(16, 4)
        set_example(model, x[:4])
        fx_t, rec_t = [], []
        for _ in range(repeats):  # interleaved
            t = time.perf_counter()
            analyse_fx(model)
            fx_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            analyse(model)
            rec_t.append(time.perf_counter() - t)
        steps = []
        for r in range(max(1, repeats // 2)):
            torch.manual_seed(r)
            m = _mlp(depth)
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            grower = Grower(m, opt, when=Every(1, times=1), how=Random(seed=r))
            t = time.perf_counter()
            events = grower.step((x, y), loss_fn=nn.functional.mse_loss)
            steps.append(time.perf_counter() - t)
        rows.append(
            {
                "Linear layers": depth,
                "fx analysis (ms)": 1e3 * statistics.median(fx_t),
                "recorded analysis (ms)": 1e3 * statistics.median(rec_t),
                "growth step (s)": statistics.median(steps),
                "units grown": len(events),
            }
        )
    for key in ("recorded analysis (ms)", "growth step (s)"):
        a, b = rows[0], rows[-1]
        exp = math.log(b[key] / a[key]) / math.log(b["Linear layers"] / a["Linear layers"])
        for r in rows:
            r[key.split(" (")[0] + " exponent"] = exp
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cov, sound = [], []
    fams = families()
    names = list(fams)[:3] + ["UNet (cat skips, interpolate)"] if args.quick else list(fams)
    for name in names:
        torch.manual_seed(0)
        built = fams[name]()
        if built is None:
            cov.append({"family": name, "layers": "-", "fx (before)": "-",
                        "recorded forward (after)": "transformers not installed"})  # fmt: skip
            continue
        model, inputs = built
        model.eval()
        row = coverage_row(name, model, inputs)
        wiring = row.pop("_wiring")
        cov.append(row)
        counts = soundness(model, inputs, wiring)
        sound.append({"family": name, **counts})
        print(f"{name:36s} {row['fx (before)']:>14s} -> {row['recorded forward (after)']:>6s}  "
              f"{counts}", flush=True)  # fmt: skip
    depths = (6, 12, 24) if args.quick else DEPTHS
    rows = cost(depths, 3 if args.quick else 9)
    for r in rows:
        print(r, flush=True)
    total = {k: sum(s[k] for s in sound) for k in ("edits", "returned", "refused", "broken")}
    tables = {
        "coverage": markdown_table(
            cov, ["family", "layers", "fx (before)", "recorded forward (after)", "units"]
        ),
        "soundness": markdown_table(
            sound, ["family", "edits", "returned", "refused", "broken", "restored"]
        ),
        "cost": markdown_table(
            rows,
            [
                "Linear layers",
                "fx analysis (ms)",
                "recorded analysis (ms)",
                "growth step (s)",
                "units grown",
            ],
        ),
        "exponents": (
            f"Scaling exponent from {depths[0]} to {depths[-1]} layers: recorded analysis "
            f"{rows[0]['recorded analysis exponent']:.2f}, all-at-once growth step "
            f"{rows[0]['growth step exponent']:.2f} (1 is linear).\n"
        ),
    }
    md = (
        "Growable Linear/Conv layers per family (their output units can be widened), "
        "before (torch.fx tracing) and after (recorded forward):\n\n"
        + tables["coverage"]
        + "\nEvery unit widened with a zero fan-in and a random fan-out, then a random fan-in "
        "and a zero fan-out (AdamW carried), checked outside the edit, then shrunk back: "
        f"{total['edits']} edits, {total['returned']} returned, {total['refused']} refused, "
        f"**{total['broken']} broken**.\n\n"
        + tables["soundness"]
        + f"\nCost against depth (MLPs, {args.threads} thread(s), medians):\n\n"
        + tables["cost"]
        + "\n"
        + tables["exponents"]
    )
    payload = {
        "quick": args.quick,
        "threads": args.threads,
        "coverage": cov,
        "soundness": sound,
        "totals": total,
        "cost": rows,
        "wall_s": time.perf_counter() - t0,
    }
    write_results("graph_coverage", payload, md, argv=argv, tables=tables)
    return payload


if __name__ == "__main__":
    main()
