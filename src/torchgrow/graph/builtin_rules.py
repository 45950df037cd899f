"""The op rules torchgrow knows out of the box, registered on import.

Element-wise and activation ops (with broadcasting, and per-channel tensors
that grow with the unit), reductions and softmax over other dims, pooling and
interpolation, normalisations, ``matmul``/``bmm`` and
``scaled_dot_product_attention``; reshapes, transposes, indexing, ``cat`` and
``split`` are in :mod:`torchgrow.graph.shape_rules`.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor

from . import shape_rules  # noqa: F401  (registers reshapes, indexing, cat and split)
from .layout import Layout
from .record import Ref
from .rules import Dims, OpContext, fixed_size_dims, ops_named, register_op, same_as_input

__all__ = ["elementwise", "activation", "reduction", "blocked_over_dim", "keep_sized", "matmul"]


# ---------------------------------------------------------------- element-wise
def elementwise(ctx: OpContext) -> None:
    """Broadcasting element-wise op: channels of the same dim must be the same channels.

    A parameter or buffer with one entry per channel grows with the channels
    (new entries 1 for ``mul``/``div``, else 0); any other tensor of the same
    width fixes them.
    """
    out_shape = ctx.shape(0)
    nd = len(out_shape)
    fill = 1.0 if any(w in ctx.name for w in ("mul", "div")) else 0.0
    per_dim: dict[int, list[tuple[Ref, Layout | None, int, int]]] = defaultdict(list)
    for r in ctx.tensor_args:
        shp = ctx.shape(r)
        dims = ctx.dims(r)
        off = nd - len(shp)
        for i, n in enumerate(shp):
            per_dim[i + off].append((r, dims.get(i), n, i))
    out: Dims = {}
    for d, items in per_dim.items():
        lays = [lay for _, lay, _, _ in items if lay is not None]
        if not lays:
            continue
        lay: Layout | None = lays[0]
        for other in lays[1:]:
            lay = ctx.unify(lay, other) if lay is not None else None
        if lay is None:
            ctx.block("combines tensors whose channels are laid out differently", lays)
            continue
        for r, known, n, i in items:
            if known is None and n != 1 and not ctx.per_channel(lay, r, i, fill):
                ctx.fix(lay, f"combined element-wise with a tensor of fixed size {n} at dim {d}")
        out[d] = lay
    for i in range(ctx.n_outputs()):
        if len(ctx.shape(i)) == nd:
            ctx.output(i, out)


def activation(ctx: OpContext) -> None:
    """An element-wise op the channels pass through (recorded for dead-unit warnings)."""
    elementwise(ctx)
    refs = ctx.tensor_args
    if refs:
        for lay in ctx.dims(refs[0]).values():
            ctx.between(lay)


_ARITH = (
    "add sub mul div true_divide floor_divide remainder fmod maximum minimum pow rsub atan2 "
    "eq ne lt le gt ge logical_and logical_or logical_xor bitwise_and bitwise_or where "
    "masked_fill lerp addcmul addcdiv hypot copysign xlogy fmax fmin "
    "add_ sub_ mul_ div_ pow_ masked_fill_ clamp_ copy_ lerp_ addcmul_ "
    "__add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ "
    "__truediv__ __rtruediv__ __itruediv__ __div__ __rdiv__ __floordiv__ __rfloordiv__ "
    "__pow__ __rpow__ __ipow__ __mod__ __and__ __or__ __xor__ __eq__ __ne__ __lt__ __le__ "
    "__gt__ __ge__ __neg__ __abs__ __invert__ expand expand_as broadcast_to"
)
_ACTIVATIONS = (
    "relu relu_ relu6 gelu silu elu selu celu leaky_relu hardtanh hardswish hardsigmoid mish "
    "softplus sigmoid sigmoid_ tanh tanh_ logsigmoid softsign tanhshrink threshold hardshrink "
    "softshrink rrelu prelu exp exp_ log log1p expm1 sqrt rsqrt abs neg square reciprocal sin cos "
    "erf erfc sign round floor ceil trunc clamp clamp_min clamp_max clip nan_to_num "
    "dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout "
    "contiguous clone detach to float half double bfloat16 type type_as cpu cuda "
    "requires_grad_ isnan isinf isfinite logical_not bool int long"
)
for _f in ops_named(_ARITH, torch, torch.Tensor):
    register_op(_f, elementwise)
for _f in ops_named(_ACTIVATIONS, torch, torch.Tensor, F):
    register_op(_f, activation)


# ---------------------------------------------------------------- reductions and friends
def _dims_arg(value: object, nd: int) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return [value % nd]
    return [int(v) % nd for v in value]  # type: ignore[union-attr]


def reduction(ctx: OpContext) -> None:
    """``sum``/``mean``/``amax``/``var``/``norm``...: over other dims the channels stay.

    Summing over the channels is fine (new zero channels add nothing); any other
    reduction over them changes with the width and blocks them.
    """
    x = ctx.tensor_args[0]
    shape = ctx.shape(x)
    nd = len(shape)
    name = ctx.name.split(".")[-1]
    pos = 2 if name == "norm" else 1
    reduced = _dims_arg(ctx.arg(pos, "dim"), nd) if nd else []
    if reduced is None:
        reduced = list(range(nd))
    keepdim = bool(ctx.arg(pos + 1, "keepdim", False))
    dims = ctx.dims(x)
    for d in reduced:
        if d in dims and name not in ("sum", "nansum"):
            ctx.block(
                f"{name} over a dimension carrying channels changes with their number", [dims[d]]
            )
    out: Dims = {}
    for d, lay in dims.items():
        if d in reduced:
            continue
        out[d if keepdim else d - sum(1 for r in reduced if r < d)] = lay
    for i in range(ctx.n_outputs()):
        ctx.output(i, out)


for _f in ops_named(
    "sum nansum mean nanmean amax amin max min std var norm logsumexp prod any all argmax argmin "
    "median count_nonzero std_mean var_mean",
    torch,
    torch.Tensor,
):
    register_op(_f, reduction)


def blocked_over_dim(ctx: OpContext) -> None:
    """``softmax``/``cumsum``/``sort``...: fine over another dim, blocked over the channels."""
    x = ctx.tensor_args[0]
    nd = len(ctx.shape(x))
    d = ctx.arg(1, "dim")
    dims = ctx.dims(x)
    if d is None or d % nd in dims:
        ctx.block(f"{ctx.name.split('.')[-1]} over a dimension carrying channels")
        dims = {k: v for k, v in dims.items() if d is not None and k != d % nd}
    for i in range(ctx.n_outputs()):
        ctx.output(i, dims)


for _f in ops_named(
    "softmax log_softmax softmin cumsum cumprod logcumsumexp sort argsort topk flip roll",
    torch,
    torch.Tensor,
    F,
):
    register_op(_f, blocked_over_dim)


def keep_sized(ctx: OpContext) -> None:
    """Pooling, interpolation, padding: channel dims that keep their size keep their channels."""
    x = ctx.tensor_args[0]
    dims = fixed_size_dims(ctx, x)
    for lay in dims.values():
        ctx.between(lay)
    for i in range(ctx.n_outputs()):
        if len(ctx.shape(i)) == len(ctx.shape(x)):
            ctx.output(i, dims)


for _f in ops_named(
    "max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d "
    "adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d "
    "adaptive_max_pool3d lp_pool1d lp_pool2d interpolate upsample upsample_nearest "
    "upsample_bilinear pad",
    F,
):
    register_op(_f, keep_sized)


def normalisation(ctx: OpContext) -> None:
    """``F.layer_norm``/``F.rms_norm``/``F.group_norm``: blocked over the channels."""
    x = ctx.tensor_args[0]
    shape = ctx.shape(x)
    dims = ctx.dims(x)
    name = ctx.name.split(".")[-1]
    if name == "group_norm":
        norm = set(range(1, len(shape)))
    else:
        k = len(tuple(ctx.arg(1, "normalized_shape") or ()))
        norm = set(range(len(shape) - k, len(shape)))
    hit = [lay for d, lay in dims.items() if d in norm]
    if hit:
        ctx.block(
            f"{name} normalises over the channels: zero-filled new channels change the "
            "statistics (register the module kind as per-channel to grow through it)",
            hit,
        )
    ctx.output(0, {d: lay for d, lay in dims.items() if d not in norm})


for _f in ops_named("layer_norm rms_norm group_norm", F):
    register_op(_f, normalisation)


# ---------------------------------------------------------------- products
def matmul(ctx: OpContext) -> None:
    """``a @ b``: ``a``'s last dim and ``b``'s second last are summed over (same channels)."""
    a, b = ctx.tensor_args[:2]
    sa, sb = ctx.shape(a), ctx.shape(b)
    if len(sa) < 2 or len(sb) < 2:
        ctx.block("matmul of vectors is not supported on channels")
        return
    da, db = ctx.dims(a), ctx.dims(b)
    la, lb = da.get(len(sa) - 1), db.get(len(sb) - 2)
    if la is not None and lb is not None:
        if ctx.unify(la, lb) is None:
            ctx.block("multiplies tensors whose channels are laid out differently", [la, lb])
    elif la is not None or lb is not None:
        ctx.fix(la if la is not None else lb, "multiplied with a matrix of fixed size")
    nd = len(ctx.shape(0))
    out: Dims = {}
    for d, lay in da.items():
        if d < len(sa) - 1:
            out[d + nd - len(sa)] = lay
    for d, lay in db.items():
        if d == len(sb) - 1:
            out[nd - 1] = lay
        elif d < len(sb) - 2:
            k = d + nd - len(sb)
            out[k] = ctx.unify(out[k], lay) if k in out else lay
    ctx.output(0, {d: lay for d, lay in out.items() if lay is not None})


for _f in ops_named("matmul bmm mm __matmul__ __rmatmul__ baddbmm", torch, torch.Tensor):
    register_op(_f, matmul)


def attention(ctx: OpContext) -> None:
    """``scaled_dot_product_attention``: the output has ``v``'s channels.

    The query/key dim is scaled by ``1/sqrt(E)``, so channels there are blocked.
    """
    q, k, v = ctx.tensor_args[:3]
    for r in (q, k):
        lay = ctx.dims(r).get(len(ctx.shape(r)) - 1)
        if lay is not None:
            ctx.block("attention scales by 1/sqrt(query width)", [lay])
    out = {}
    dv = ctx.dims(v)
    nd = len(ctx.shape(0))
    if nd - 1 in dv:
        out[nd - 1] = dv[nd - 1]
    for r in (q, k, v):
        for d, lay in ctx.dims(r).items():
            if d < len(ctx.shape(r)) - 1:
                ctx.block("attention mixes the positions of a dimension carrying channels", [lay])
    ctx.output(0, out)


register_op(F.scaled_dot_product_attention, attention)


def _nothing(ctx: OpContext) -> None:
    """The outputs carry no channels (a new tensor of a given shape)."""


def _like(ctx: OpContext) -> None:
    """``zeros_like``...: a tensor shaped like the input, with the same channel dims."""
    dims = ctx.dims(ctx.tensor_args[0])
    for i in range(ctx.n_outputs()):
        ctx.output(i, dims)


for _f in ops_named("zeros_like ones_like empty_like full_like rand_like randn_like", torch):
    register_op(_f, _like)
for _f in ops_named("new_zeros new_ones new_empty new_full new_tensor", torch.Tensor):
    register_op(_f, _nothing)
register_op("Tensor.shape", _nothing)
register_op(Tensor.size, _nothing)
_ = same_as_input  # re-exported building block
