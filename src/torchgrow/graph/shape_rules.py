"""Built-in op rules for ops that move channels between dims: reshapes and flattens,
transposes and permutes, indexing, ``cat``/``stack`` and ``split``/``chunk``.
Registered on import (by :mod:`torchgrow.graph.builtin_rules`)."""

from __future__ import annotations

import torch

from .layout import Cat, Fixed, Layout
from .record import Ref
from .rules import Dims, OpContext, as_layout, concat, ops_named, product, register_op

__all__ = ["reshape", "transpose", "getitem", "setitem", "cat", "stack", "split"]


# ---------------------------------------------------------------- reshapes
def _groups(sin: tuple[int, ...], sout: tuple[int, ...], skip: set[int]) -> list | None:
    """Pair runs of input dims with runs of output dims of equal product (size-1 dims skipped)."""
    i = j = 0
    groups = []
    while True:
        while i < len(sin) and sin[i] == 1 and i in skip:
            i += 1
        if i >= len(sin) or sin[i] != 1:  # a width-1 unit pairs with the next dim as it is
            while j < len(sout) and sout[j] == 1:
                j += 1
        if i >= len(sin) or j >= len(sout):
            return groups if i >= len(sin) and j >= len(sout) else None
        ins, outs, pi, pj = [i], [j], sin[i], sout[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(sin):
                ins.append(i)
                pi *= sin[i]
                i += 1
            elif pj < pi and j < len(sout):
                outs.append(j)
                pj *= sout[j]
                j += 1
            else:
                return None
        groups.append((ins, outs))


def reshape(ctx: OpContext) -> None:
    """``view``/``reshape``/``flatten``/``unsqueeze``...: merged dims make a product layout.

    Splitting a dim that carries channels into several (attention heads) is blocked.
    """
    x = ctx.tensor_args[0]
    sin, sout = ctx.shape(x), ctx.shape(0)
    dims = ctx.dims(x)
    groups = _groups(sin, sout, set(range(len(sin))) - set(dims))
    if groups is None:
        ctx.block(f"reshape from {sin} to {sout} not understood")
        return
    out: Dims = {}
    explicit = ctx.name.split(".")[-1] in ("view", "reshape")
    for ins, outs in groups:
        if not any(d in dims for d in ins):
            continue
        new_one_before = (
            explicit
            and outs[0] > 0
            and sout[outs[0] - 1] == 1
            and (ins[0] == 0 or sin[ins[0] - 1] != 1)
        )
        if len(outs) == 1 and new_one_before:  # (B, T, D) -> (B, T, 1, D): one head of D
            ctx.block(
                "splits a dimension carrying channels into heads (here one head); growing them "
                "needs head-aware growth",
                [dims[d] for d in ins if d in dims],
            )
        elif len(outs) == 1:
            out[outs[0]] = product([as_layout(dims, d, sin[d]) for d in ins])
        else:
            ctx.block(
                "splits a dimension carrying channels into several (attention heads?); "
                "growing them needs head-aware growth",
                [dims[d] for d in ins if d in dims],
            )
    ctx.output(0, out)


for _f in ops_named(
    "view reshape flatten unflatten unsqueeze squeeze view_as reshape_as unsqueeze_ squeeze_ ravel",
    torch,
    torch.Tensor,
):
    register_op(_f, reshape)


def transpose(ctx: OpContext) -> None:
    """``transpose``/``permute``/``t``/``.T``/``.mT``/``movedim``: channel dims move."""
    x = ctx.tensor_args[0]
    nd = len(ctx.shape(x))
    name = ctx.name.split(".")[-1]
    order = list(range(nd))
    if name in ("transpose", "swapaxes", "swapdims", "transpose_"):
        a, b = ctx.arg(1, "dim0") % nd, ctx.arg(2, "dim1") % nd
        order[a], order[b] = order[b], order[a]
    elif name == "permute":
        p = ctx.call.args[1:] if not isinstance(ctx.arg(1, "dims"), (tuple, list)) else ctx.arg(1)
        order = [int(d) % nd for d in p]
    elif name in ("t", "T"):
        order = order[::-1]
    elif name in ("mT", "mH"):
        order[-1], order[-2] = order[-2], order[-1]
    else:
        ctx.block(f"{name} is not understood")
        return
    dims = ctx.dims(x)
    ctx.output(0, {new: dims[old] for new, old in enumerate(order) if old in dims})


for _f in ops_named("transpose swapaxes swapdims transpose_ permute t", torch, torch.Tensor):
    register_op(_f, transpose)
for _name in ("Tensor.T", "Tensor.mT", "Tensor.mH"):
    register_op(_name, transpose)


# ---------------------------------------------------------------- indexing
def getitem(ctx: OpContext) -> None:
    """``x[...]`` with ints, full or partial slices, ``None``, ``...`` and index tensors."""
    x = ctx.tensor_args[0]
    shape = ctx.shape(x)
    dims = ctx.dims(x)
    idx = ctx.arg(1)
    idx = idx if isinstance(idx, tuple) else (idx,)
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded: list = []
    for i in idx:
        if i is Ellipsis:
            expanded += [slice(None)] * (len(shape) - n_real)
        else:
            expanded.append(i)
    expanded += [slice(None)] * (len(shape) - sum(1 for i in expanded if i is not None))
    if any(isinstance(i, (Ref, list)) for i in expanded):
        if any(d in dims for d in range(len(shape))):
            ctx.block("indexes with a tensor a tensor that carries channels")
        return
    out: Dims = {}
    d_in = d_out = 0
    for i in expanded:
        if i is None:
            d_out += 1
            continue
        lay = dims.get(d_in)
        if isinstance(i, slice):
            full = i == slice(None) or (
                (i.start in (None, 0))
                and (i.stop is None or i.stop >= shape[d_in])
                and i.step in (None, 1)
            )
            if lay is not None:
                if full:
                    out[d_out] = lay
                else:
                    ctx.block("slices part of a dimension carrying channels", [lay])
            d_out += 1
        elif lay is not None:
            ctx.block("indexes a single entry of a dimension carrying channels", [lay])
        d_in += 1
    ctx.output(0, out)


register_op(torch.Tensor.__getitem__, getitem)


def setitem(ctx: OpContext) -> None:
    """``x[...] = v``: allowed when neither side's channel dims are indexed."""
    x = ctx.tensor_args[0]
    dims = ctx.dims(x)
    if any(isinstance(v, Ref) and ctx.dims(v) for v in ctx.call.args[1:]) or dims:
        ctx.block("assigns into a tensor that carries channels")
    ctx.output(0, {})


register_op(torch.Tensor.__setitem__, setitem)


# ---------------------------------------------------------------- cat, stack, split
def _match_other_dims(ctx: OpContext, refs: list[Ref], skip: int | None, nd: int) -> Dims:
    out: Dims = {}
    for d in range(nd):
        if d == skip:
            continue
        lays = [ctx.dims(r).get(d) for r in refs]
        known = [lay for lay in lays if lay is not None]
        if not known:
            continue
        lay: Layout | None = known[0]
        for other in known[1:]:
            lay = ctx.unify(lay, other) if lay is not None else None
        if lay is None:
            ctx.block("joins tensors whose channels are laid out differently", known)
            continue
        for r, x in zip(refs, lays, strict=True):
            if x is None and not ctx.per_channel(lay, r, d, 0.0):
                ctx.fix(lay, "joined with a tensor of fixed width")
        out[d] = lay
    return out


def cat(ctx: OpContext) -> None:
    """``torch.cat``: channels of the joined dim laid side by side, at their offsets."""
    refs = [r for r in ctx.arg(0, "tensors") if isinstance(r, Ref)]
    refs = [r for r in refs if ctx.shape(r) != (0,)]
    nd = len(ctx.shape(0))
    d = ctx.arg(1, "dim", 0) % nd
    out = _match_other_dims(ctx, refs, d, nd)
    parts = [as_layout(ctx.dims(r), d, ctx.shape(r)[d]) for r in refs]
    if any(not isinstance(p, Fixed) for p in parts):
        out[d] = concat(parts)
    ctx.output(0, out)


def stack(ctx: OpContext) -> None:
    """``torch.stack``: a new dim; the others keep (and share) their channels."""
    refs = [r for r in ctx.arg(0, "tensors") if isinstance(r, Ref)]
    nd = len(ctx.shape(refs[0]))
    d = ctx.arg(1, "dim", 0) % (nd + 1)
    same = _match_other_dims(ctx, refs, None, nd)
    ctx.output(0, {(k if k < d else k + 1): lay for k, lay in same.items()})


for _f in ops_named("cat concat concatenate", torch):
    register_op(_f, cat)
register_op(torch.stack, stack)


def split(ctx: OpContext) -> None:
    """``split``/``chunk``/``unbind``: along another dim the pieces keep the channels.

    Along the channel dim, pieces that are exactly the parts of a ``torch.cat`` get
    those parts; any other cut is blocked.
    """
    x = ctx.tensor_args[0]
    shape = ctx.shape(x)
    dims = ctx.dims(x)
    name = ctx.name.split(".")[-1]
    d = ctx.arg(2 if name != "unbind" else 1, "dim", 0) % len(shape)
    outs = range(ctx.n_outputs())
    if d not in dims:
        for i in outs:
            if name == "unbind":
                ctx.output(i, {(k if k < d else k - 1): v for k, v in dims.items()})
            else:
                ctx.output(i, dims)
        return
    lay = dims[d]
    sizes = [ctx.shape(i)[d] for i in outs] if name != "unbind" else []
    if isinstance(lay, Cat) and name != "unbind":
        part_sizes = [ctx.size(p) for p in lay.parts]
        if part_sizes == sizes:
            for i, part in zip(outs, lay.parts, strict=True):
                rest = {k: v for k, v in dims.items() if k != d}
                if not isinstance(part, Fixed):
                    rest[d] = part
                ctx.output(i, rest)
            return
    ctx.block("splits a dimension carrying channels", [lay])
    for i in outs:
        ctx.output(i, {k: v for k, v in dims.items() if k != d})


for _f in ops_named("split chunk unbind tensor_split split_with_sizes", torch, torch.Tensor):
    register_op(_f, split)
